"""Real Salt master/minion processes for tests, sandboxed in a temp dir on 127.0.0.1.

Independent of pytest: fixtures wrap these helpers. Salt itself is imported lazily
(only :meth:`SaltMaster.opts` needs it); everything else drives Salt's own CLI
scripts (``salt-master``, ``salt-minion``, ``salt-key``, ``salt``) as subprocesses,
resolved from the directory of ``sys.executable`` first, then ``PATH``.

Every wait polls a condition against a deadline and raises :class:`SaltEnvError`
with the tail of the relevant Salt log on timeout. Servers run in their own
session/process group and are stopped by killing the whole group.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Key states as salt-key -L --out=json names them; also the directory names
# under the master's pki_dir (localfs_key cache driver, Salt 3008).
KEY_STATES = ("minions", "minions_pre", "minions_rejected", "minions_denied")
AUTOSIGN_DIR = "minions_autosign"


def _salt_release() -> tuple[int, int]:
    import salt.version

    info = salt.version.__saltstack_version__
    return (int(info.major), int(info.minor or 0))


#: The Salt release these tests run against, e.g. (3006, 27): some facts differ by line
#: (docs/compatibility.md).
SALT_RELEASE = _salt_release()

# Unix socket paths are limited to 107 bytes. Salt's longest socket name under a sock_dir is
# a minion's "minion_event_<10 hex>_pull.ipc" (32 characters, plus the slash): with a longer
# dir the minion cannot bind its event socket ("AF_UNIX path too long") and never answers a
# job, which showed up only when pytest's temp path happened to be long.
_MAX_SOCK_DIR_LEN = 107 - 33 - 10  # 10 characters to spare


class SaltEnvError(RuntimeError):
    """A Salt process did not reach the expected state in time, or a CLI call failed."""


# --------------------------------------------------------------------------- utils


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p not in ports:
            ports.append(p)
    return ports


def salt_script(name: str) -> list[str]:
    """argv prefix to run Salt's console script *name* (e.g. "salt-key").

    Looks next to ``sys.executable`` first (the venv running the tests), then PATH.
    A script found next to ``sys.executable`` is run with that interpreter (this
    avoids shebang-length limits of deep venv paths).
    """
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return [sys.executable, str(local)]
    found = shutil.which(name)
    if found:
        return [found]
    raise SaltEnvError(
        f"Salt script {name!r} not found next to {sys.executable} nor on PATH; "
        "is salt installed in the test environment?"
    )


def log_tail(path: Path | None, lines: int = 40) -> str:
    if path is None:
        return "(no log file)"
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    tail = data.splitlines()[-lines:]
    return f"--- last {len(tail)} lines of {path} ---\n" + "\n".join(tail)


def wait_until(
    condition: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    log_file: Path | None = None,
    proc: subprocess.Popen | None = None,
) -> Any:
    """Poll *condition* until it returns a truthy value; return that value.

    Raises SaltEnvError (with the tail of *log_file*) on timeout, or at once if
    *proc* exits while waiting.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = condition()
        except Exception as exc:  # condition may fail transiently (e.g. CLI while starting)
            result, last_exc = None, exc
        if result:
            return result
        if proc is not None and proc.poll() is not None:
            raise SaltEnvError(
                f"process {proc.args!r} exited with code {proc.returncode} while waiting "
                f"for {what}\n{log_tail(log_file)}"
            )
        if time.monotonic() >= deadline:
            extra = f"; last error: {last_exc!r}" if last_exc else ""
            raise SaltEnvError(
                f"timed out after {timeout:.1f}s waiting for {what}{extra}\n{log_tail(log_file)}"
            )
        time.sleep(interval)


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# ------------------------------------------------------------- process-group kill


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, state) for every process, read from /proc."""
    table: dict[int, tuple[int, int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode("utf-8", "replace")
        except OSError:
            continue
        # comm (field 2) may contain spaces/parens: split after the last ')'
        rest = stat[stat.rfind(")") + 2 :].split()
        try:
            table[int(entry)] = (int(rest[1]), int(rest[2]), rest[0])
        except (IndexError, ValueError):
            continue
    return table


def live_processes(pgid: int, extra_pids: Iterable[int] = ()) -> list[int]:
    """Non-zombie processes in process group *pgid*, plus those of *extra_pids* still alive."""
    extra = set(extra_pids)
    return sorted(
        pid
        for pid, (_ppid, pg, state) in _proc_table().items()
        if state != "Z" and (pg == pgid or pid in extra)
    )


def _descendants(root_pid: int) -> set[int]:
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _pg, _st) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: set[int] = set()
    todo = [root_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _signal_all(pgid: int, pids: Iterable[int], sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop_process(proc: subprocess.Popen | None, timeout: float = 15) -> None:
    """Stop *proc* and everything in its process group (it must have been started
    with ``start_new_session=True``): SIGTERM the group, wait up to *timeout*
    seconds, then SIGKILL whatever is left. Descendants that left the group are
    tracked by PID too. Returns once no process of the group is alive; raises
    SaltEnvError if something survives SIGKILL."""
    if proc is None:
        return
    pgid = proc.pid  # start_new_session=True: the leader's pid is the pgid
    strays = _descendants(proc.pid)
    _signal_all(pgid, strays, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()  # reap our direct child so it does not linger as a zombie
        if proc.returncode is not None and not live_processes(pgid, strays):
            return
        time.sleep(0.1)
    _signal_all(pgid, strays, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        proc.poll()
        if proc.returncode is not None and not live_processes(pgid, strays):
            return
        time.sleep(0.05)
    raise SaltEnvError(
        f"processes of group {pgid} survived SIGKILL: {live_processes(pgid, strays)}"
    )


# ------------------------------------------------------------------------- keys


def generate_public_key_pem(bits: int = 2048) -> str:
    """A fresh RSA public key in the PEM (SubjectPublicKeyInfo) form a Salt minion
    submits and the master stores (trailing whitespace stripped)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.public_key().public_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return pem.decode("ascii").strip()


def make_minion_keys(pki: Path) -> str:
    """A minion key pair in *pki* made before the minion starts (salt-minion then uses it,
    as with data/instance/aws_ork-bind-minion.sh); returns its fingerprint as
    ``salt-call --local key.finger`` prints it."""
    import salt.utils.crypt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pki.mkdir(parents=True, exist_ok=True)
    pki.chmod(0o700)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (pki / "minion.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    (pki / "minion.pem").chmod(0o600)
    (pki / "minion.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return str(salt.utils.crypt.pem_finger(str(pki / "minion.pub")))


def _write_config(path: Path, data: dict) -> None:
    """Salt reads its config as YAML; JSON is YAML, so no PyYAML needed here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _short_sock_dir(wanted: Path) -> Path:
    """*wanted* if short enough for Unix socket paths, else a short dir under /tmp."""
    if len(str(wanted)) <= _MAX_SOCK_DIR_LEN:
        return wanted
    return Path(tempfile.mkdtemp(prefix="saltsock-"))


def _popen(argv: Sequence[str], log_dir: Path, name: str) -> subprocess.Popen:
    """Start a Salt daemon in its own session; stdout/stderr go to <log_dir>/<name>.out."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{name}.out", "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


# ----------------------------------------------------------------------- master


@dataclass
class SaltMaster:
    root: Path
    config_dir: Path
    config_file: Path
    pki_dir: Path
    pki_root: Path
    sock_dir: Path
    publish_port: int
    ret_port: int
    proc: subprocess.Popen | None
    cachedir: Path = field(default=None)  # type: ignore[assignment]
    log_file: Path = field(default=None)  # type: ignore[assignment]
    config: dict = field(default_factory=dict)  # the options written to config_file
    _owned_sock_dir: bool = False

    # -- config / state ---------------------------------------------------------

    def opts(self) -> dict:
        """Salt's fully-resolved master opts for this config (imports salt)."""
        import salt.config

        return salt.config.master_config(str(self.config_file))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _run_cli(
        self, script: str, args: Sequence[str], timeout: float, check: bool = True
    ) -> subprocess.CompletedProcess:
        argv = [*salt_script(script), "-c", str(self.config_dir), *args]
        try:
            cp = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            raise SaltEnvError(
                f"{' '.join(argv)} timed out after {timeout}s\n"
                f"stdout: {exc.stdout!r}\nstderr: {exc.stderr!r}\n{log_tail(self.log_file)}"
            ) from exc
        if check and cp.returncode != 0:
            raise SaltEnvError(
                f"{' '.join(argv)} exited {cp.returncode}\nstdout: {cp.stdout}\n"
                f"stderr: {cp.stderr}\n{log_tail(self.log_file)}"
            )
        return cp

    def salt_key(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run ``salt-key -c config_dir <args>`` (add ``-y`` yourself for changes)."""
        return self._run_cli("salt-key", args, timeout)

    def key_states(self) -> dict[str, list[str]]:
        """What Salt sees: ``salt-key -L --out=json`` as {state: sorted ids} for all
        four states ("minions", "minions_pre", "minions_rejected", "minions_denied")."""
        cp = self._run_cli("salt-key", ["-L", "--out=json"], timeout=30)
        try:
            data = json.loads(cp.stdout)
        except ValueError as exc:
            raise SaltEnvError(
                f"salt-key -L printed non-JSON: {cp.stdout!r} (stderr {cp.stderr!r})"
            ) from exc
        return {state: sorted(data.get(state) or []) for state in KEY_STATES}

    def key_state_of(self, minion_id: str) -> str | None:
        states = self.key_states()
        for state in KEY_STATES:
            if minion_id in states[state]:
                return state
        return None

    def wait_for_key(self, minion_id: str, state: str, timeout: float = 30) -> None:
        """Poll salt-key until *minion_id* is listed under *state*."""
        if state not in KEY_STATES:
            raise ValueError(f"state must be one of {KEY_STATES}, not {state!r}")
        last: dict = {}

        def check() -> bool:
            last["states"] = self.key_states()
            return minion_id in last["states"][state]

        try:
            wait_until(
                check,
                timeout=timeout,
                interval=0.2,
                what=f"key {minion_id!r} in {state}",
                log_file=self.log_file,
            )
        except SaltEnvError as exc:
            raise SaltEnvError(f"{exc}\nlast salt-key -L: {last.get('states')}") from None

    # -- key files ----------------------------------------------------------------

    def key_path(self, minion_id: str, state: str) -> Path:
        if state not in KEY_STATES + (AUTOSIGN_DIR,):
            raise ValueError(f"unknown key state {state!r}")
        return self.pki_dir / state / minion_id

    def _add_key(self, minion_id: str, state: str, pub: str | None) -> Path:
        path = self.key_path(minion_id, state)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = (pub if pub is not None else generate_public_key_pem()).strip()
        tmp = path.with_name(f".{minion_id}.tmp")
        tmp.write_text(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # atomic, like Salt's own writes
        return path

    def add_pending_key(self, minion_id: str, pub: str | None = None) -> Path:
        """Simulate a minion that submitted its key: pki_dir/minions_pre/<id>."""
        return self._add_key(minion_id, "minions_pre", pub)

    def add_accepted_key(self, minion_id: str, pub: str | None = None) -> Path:
        return self._add_key(minion_id, "minions", pub)

    def add_rejected_key(self, minion_id: str, pub: str | None = None) -> Path:
        return self._add_key(minion_id, "minions_rejected", pub)

    def add_denied_key(self, minion_id: str, pub: str | None = None) -> Path:
        """pki_dir/minions_denied/<id> (one file per id; Salt 3008's localfs_key
        driver keeps only a single denied key per id on disk)."""
        return self._add_key(minion_id, "minions_denied", pub)

    def add_autosign_stub(self, minion_id: str, content: str = "") -> Path:
        """pki_dir/minions_autosign/<id>: the master accepts <id> at its next auth
        request and deletes the stub (content is ignored by Salt)."""
        path = self.key_path(minion_id, AUTOSIGN_DIR)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        return path

    def clear_keys(self, *, autosign: bool = True) -> None:
        """Delete every minion key file in every state (and autosign stubs)."""
        dirs = list(KEY_STATES) + ([AUTOSIGN_DIR] if autosign else [])
        for d in dirs:
            base = self.pki_dir / d
            if not base.is_dir():
                continue
            for entry in base.iterdir():
                if entry.is_file() or entry.is_symlink():
                    entry.unlink(missing_ok=True)

    # -- commands -------------------------------------------------------------------

    def salt_cmd(
        self,
        target: str,
        fun: str,
        timeout: float = 30,
        *,
        args: Sequence[str] = (),
        salt_timeout: int = 10,
    ) -> dict:
        """``salt -c config_dir --out=json --static -t <salt_timeout> <target> <fun> <args>``
        -> parsed JSON, e.g. {"i-...": True} for test.ping. Minions that do not
        answer appear with Salt's "Minion did not return" string; the exit code
        is not checked (salt exits non-zero then), unparseable output raises."""
        salt_timeout = max(1, min(salt_timeout, int(timeout) - 5 if timeout > 6 else 1))
        cp = self._run_cli(
            "salt",
            ["--out=json", "--static", "-t", str(salt_timeout), target, fun, *args],
            timeout=timeout,
            check=False,
        )
        try:
            return json.loads(cp.stdout) if cp.stdout.strip() else {}
        except ValueError as exc:
            raise SaltEnvError(
                f"salt {target} {fun} (exit {cp.returncode}) printed non-JSON:\n"
                f"stdout: {cp.stdout}\nstderr: {cp.stderr}\n{log_tail(self.log_file)}"
            ) from exc

    def wait_for_ping(self, minion_id: str, timeout: float = 30) -> None:
        """Retry ``test.ping`` until *minion_id* answers True. A freshly accepted
        minion needs its next auth retry (acceptance_wait_time) plus a publisher
        connection before it sees jobs; jobs published earlier are missed."""
        last: dict = {}

        def ping() -> bool:
            last["ret"] = self.salt_cmd(minion_id, "test.ping", timeout=15, salt_timeout=3)
            return last["ret"].get(minion_id) is True

        try:
            wait_until(
                ping,
                timeout=timeout,
                interval=0.2,
                what=f"{minion_id!r} to answer test.ping",
                log_file=self.log_file,
            )
        except SaltEnvError as exc:
            raise SaltEnvError(f"{exc}\nlast salt output: {last.get('ret')!r}") from None

    # -- lifecycle ------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        """Start salt-master (if not running) and wait until it is ready."""
        if self.running:
            return
        # stale sentinels from a previous run must not count as readiness
        shutil.rmtree(self.cachedir / "health", ignore_errors=True)
        for name in ("master_event_pub.ipc", "master_event_pull.ipc"):
            (self.sock_dir / name).unlink(missing_ok=True)
        self.proc = _popen(
            [*salt_script("salt-master"), "-c", str(self.config_dir), "-l", "info"],
            self.root / "log",
            "salt-master",
        )
        wait_until(
            self._ready,
            timeout=timeout,
            interval=0.1,
            what=f"salt-master (pid {self.proc.pid}) to become ready",
            log_file=self.log_file,
            proc=self.proc,
        )

    def _ready(self) -> bool:
        return (
            (self.pki_dir / "master.pem").is_file()
            and (self.pki_dir / "master.pub").is_file()
            and (self.sock_dir / "master_event_pub.ipc").exists()
            and (self.sock_dir / "master_event_pull.ipc").exists()
            and _port_open(self.ret_port)
            and _port_open(self.publish_port)
        )

    def stop(self, timeout: float = 15) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc, timeout)

    def cleanup(self) -> None:
        """stop() and remove an out-of-tree sock_dir created for long roots."""
        self.stop()
        if self._owned_sock_dir:
            shutil.rmtree(self.sock_dir, ignore_errors=True)


def master_config(root: Path, publish_port: int, ret_port: int, sock_dir: Path) -> dict:
    """The sandbox master options written by start_master (before extra_opts)."""
    return {
        "id": "saltenv_master",  # skip hostname/FQDN discovery
        "root_dir": "/",
        "user": getpass.getuser(),
        "interface": "127.0.0.1",
        "ipv6": False,
        "transport": "zeromq",
        "publish_port": publish_port,
        "ret_port": ret_port,
        "pki_dir": str(root / "pki" / "master"),
        "cachedir": str(root / "cache" / "master"),
        "sock_dir": str(sock_dir),
        "pidfile": str(root / "run" / "salt-master.pid"),
        "log_file": str(root / "log" / "master.log"),
        "key_logfile": str(root / "log" / "key.log"),
        "ssh_log_file": str(root / "log" / "ssh.log"),
        "log_level": "warning",
        "log_level_logfile": "info",
        # not the host's /etc/salt one; no autosign_file (Salt has no default for it): aws_ork
        # reports one as accepting keys behind its back (aws_ork/keys/bypass.py)
        "autoreject_file": str(root / "etc" / "autoreject.conf"),
        "sqlite_queue_dir": str(root / "cache" / "master" / "queues"),
        "file_roots": {"base": [str(root / "srv" / "salt")]},
        "pillar_roots": {"base": [str(root / "srv" / "pillar")]},
        "fileserver_backend": ["roots"],
        "worker_threads": 2,
        "con_cache": False,
        "presence_events": False,
        "enable_ssh_minions": False,
        "auto_accept": False,
        "open_mode": False,
    }


def start_master(
    root: Path,
    *,
    start: bool = True,
    extra_opts: dict | None = None,
    timeout: float = 60,
) -> SaltMaster:
    """Write a sandboxed master config under *root* (config in root/etc/salt/master,
    pki in root/pki/master, ...) on free 127.0.0.1 ports and, with start=True,
    start salt-master and wait until it serves. *extra_opts* override/add options."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    publish_port, ret_port = _free_ports(2)
    wanted_sock = root / "sock" / "master"
    sock_dir = _short_sock_dir(wanted_sock)
    cfg = master_config(root, publish_port, ret_port, sock_dir)
    cfg.update(extra_opts or {})

    config_dir = root / "etc" / "salt"
    config_file = config_dir / "master"
    pki_dir = Path(cfg["pki_dir"])
    sock_dir = Path(cfg["sock_dir"])
    cachedir = Path(cfg["cachedir"])
    for d in (
        root / "run",
        root / "log",
        root / "etc",
        cachedir,
        sock_dir,
        *(Path(p) for p in cfg["file_roots"]["base"]),
        *(Path(p) for p in cfg["pillar_roots"]["base"]),
    ):
        d.mkdir(parents=True, exist_ok=True)
    pki_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(pki_dir, 0o700)
    for state in (*KEY_STATES, AUTOSIGN_DIR):
        (pki_dir / state).mkdir(exist_ok=True)
    _write_config(config_file, cfg)

    master = SaltMaster(
        root=root,
        config_dir=config_dir,
        config_file=config_file,
        pki_dir=pki_dir,
        pki_root=pki_dir.parent,
        sock_dir=sock_dir,
        publish_port=int(cfg["publish_port"]),
        ret_port=int(cfg["ret_port"]),
        proc=None,
        cachedir=cachedir,
        log_file=Path(cfg["log_file"]),
        config=cfg,
        _owned_sock_dir=sock_dir != wanted_sock and "sock_dir" not in (extra_opts or {}),
    )
    if start:
        ports_fixed = {"publish_port", "ret_port"} & set(extra_opts or {})
        for attempt in range(3):
            try:
                master.start(timeout=timeout)
                break
            except SaltEnvError:
                # salt-master checks its ports up front and exits (code 4) if one was
                # taken between free_port() and its bind: retry on fresh ports
                lost_race = (
                    master.proc is not None
                    and master.proc.poll() is not None
                    and "Address already in use" in log_tail(master.log_file, 20)
                )
                master.stop()
                if ports_fixed or not lost_race or attempt == 2:
                    raise
                master.publish_port, master.ret_port = _free_ports(2)
                cfg.update(publish_port=master.publish_port, ret_port=master.ret_port)
                _write_config(config_file, cfg)
            except BaseException:
                master.stop()
                raise
    return master


# ----------------------------------------------------------------------- minion


@dataclass
class SaltMinion:
    minion_id: str
    root: Path
    config_dir: Path
    pki_dir: Path
    proc: subprocess.Popen
    config_file: Path = field(default=None)  # type: ignore[assignment]
    log_file: Path = field(default=None)  # type: ignore[assignment]
    config: dict = field(default_factory=dict)
    _owned_sock_dir: Path | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def public_key(self) -> str:
        """The minion's own public key (what it submits to the master)."""
        return (self.pki_dir / "minion.pub").read_text().strip()

    def stop(self, timeout: float = 1) -> None:
        """SIGTERM the minion's process group, SIGKILL it after *timeout* seconds.

        The default is short on purpose: on SIGTERM salt-minion 3008 sleeps 5 s
        before shutting down (MinionManager.stop_async) and, while it is in its
        key-acceptance retry loop, may not service the signal at all, so a
        graceful stop costs 6-15 s and buys a test nothing."""
        proc, self.proc = self.proc, None  # type: ignore[assignment]
        try:
            stop_process(proc, timeout)
        finally:
            if self._owned_sock_dir is not None:
                shutil.rmtree(self._owned_sock_dir, ignore_errors=True)


def minion_config(
    master: SaltMaster, root: Path, minion_id: str, sock_dir: Path, acceptance_wait_time: float
) -> dict:
    return {
        "id": minion_id,
        "root_dir": "/",
        "user": getpass.getuser(),
        "master": "127.0.0.1",
        "master_port": master.ret_port,
        "publish_port": master.publish_port,
        "ipv6": False,
        "transport": "zeromq",
        "pki_dir": str(root / "pki"),
        "cachedir": str(root / "cache"),
        "sock_dir": str(sock_dir),
        "pidfile": str(root / "run" / "salt-minion.pid"),
        "log_file": str(root / "log" / "minion.log"),
        "log_level": "warning",
        "log_level_logfile": "info",
        "acceptance_wait_time": acceptance_wait_time,
        "acceptance_wait_time_max": acceptance_wait_time,
        "random_startup_delay": 0,
        "random_reauth_delay": 0,
        "recon_default": 100,
        "recon_max": 1000,
        "recon_randomize": False,
        "auth_timeout": 5,
        # no slow or cloud-probing grains, no background chatter
        "enable_fqdns_grains": False,
        "enable_gpu_grains": False,
        "metadata_server_grains": False,
        "grains_cache": False,
        "mine_enabled": False,
        "startup_states": "",
        "beacons": {},
        "file_client": "remote",
        "multiprocessing": False,
    }


def start_minion(
    master: SaltMaster,
    root: Path,
    minion_id: str,
    *,
    acceptance_wait_time: float = 1,
    timeout: float = 60,
    extra_opts: dict | None = None,
) -> SaltMinion:
    """Write a minion config under *root* pointing at *master* (127.0.0.1) and start
    salt-minion. Returns once the process is up and has written its key pair (it
    does not wait for the key to be accepted)."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    wanted_sock = root / "sock"
    sock_dir = _short_sock_dir(wanted_sock)
    cfg = minion_config(master, root, minion_id, sock_dir, acceptance_wait_time)
    cfg.update(extra_opts or {})
    config_dir = root / "etc" / "salt"
    config_file = config_dir / "minion"
    pki_dir = Path(cfg["pki_dir"])
    for d in (root / "run", root / "log", Path(cfg["cachedir"]), Path(cfg["sock_dir"])):
        d.mkdir(parents=True, exist_ok=True)
    pki_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(pki_dir, 0o700)
    _write_config(config_file, cfg)
    log_file = Path(cfg["log_file"])
    proc = _popen(
        [*salt_script("salt-minion"), "-c", str(config_dir), "-l", "info"],
        root / "log",
        "salt-minion",
    )
    minion = SaltMinion(
        minion_id=minion_id,
        root=root,
        config_dir=config_dir,
        pki_dir=pki_dir,
        proc=proc,
        config_file=config_file,
        log_file=log_file,
        config=cfg,
        _owned_sock_dir=sock_dir if sock_dir != wanted_sock else None,
    )
    try:
        wait_until(
            lambda: (pki_dir / "minion.pub").is_file() and (pki_dir / "minion.pem").is_file(),
            timeout=timeout,
            what=f"salt-minion {minion_id} (pid {proc.pid}) to start and write its keys",
            log_file=log_file,
            proc=proc,
        )
    except BaseException:
        minion.stop()
        raise
    return minion
