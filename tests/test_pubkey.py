"""aws_ork/base/pubkey.py: the key tags (salt:minion-key-N) decoded into the PEM salt-key
writes; the real ``salt-key --gen-keys`` (once per module) for what that PEM is, Salt's own key
comparison for what the minion's first authentication must match; every refusal with its
message; hypothesis properties over hostile tag dicts."""

from __future__ import annotations

import base64
import functools
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import salt.channel.server
import salt.crypt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from aws_ork.base import pubkey
from aws_ork.base.pubkey import KEY_TAG_PREFIX, PublishedKeyError

SALT_KEY = Path(sys.executable).parent / "salt-key"
#: key tags per size: the base64 of a DER SPKI is 392 (2048), 564 (3072), 736 (4096) characters
TAGS_PER_SIZE = {2048: 2, 3072: 3, 4096: 3}
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
PROPERTY = settings(max_examples=400, deadline=None)


@functools.cache
def private_key(size: int, exponent: int = 65537) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=exponent, key_size=size)


def spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def pem_of(size: int) -> str:
    return (
        private_key(size)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


@functools.cache
def text_of(size: int) -> str:
    """The standard base64 of the key's DER SubjectPublicKeyInfo."""
    return base64.b64encode(spki(private_key(size).public_key())).decode("ascii")


def tags(*values: str, **others: str) -> dict[str, str]:
    """salt:minion-key-0, -1 ... in this order, beside other tags."""
    return {**{f"{KEY_TAG_PREFIX}{i}": v for i, v in enumerate(values)}, **others}


def chunked(text: str, width: int = 256) -> dict[str, str]:
    return tags(*(text[i : i + width] for i in range(0, len(text), width)))


def der_tags(der: bytes) -> dict[str, str]:
    return chunked(base64.b64encode(der).decode("ascii"))


def pem_body(pem: str) -> str:
    """The PEM's base64, its lines joined (what the instance script publishes)."""
    lines = pem.strip().splitlines()
    assert lines[0] == "-----BEGIN PUBLIC KEY-----" and lines[-1] == "-----END PUBLIC KEY-----"
    return "".join(lines[1:-1])


def salt_says_same(first: str, second: str) -> bool:
    """Salt's own comparison of a presented key with the stored one (the request server's
    compare_keys where this Salt has it, else clean_key on both sides as it does)."""
    compare = getattr(salt.channel.server.ReqServerChannel, "compare_keys", None)
    if compare is not None:
        return bool(compare(first, second))
    return bool(salt.crypt.clean_key(first) == salt.crypt.clean_key(second))


@pytest.fixture(scope="module")
def salt_pubs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    """minion.pub as the real ``salt-key --gen-keys`` writes it: its default size (2048,
    no --keysize) and --keysize 3072 and 4096."""
    made: dict[int, str] = {}
    for size in (2048, 3072, 4096):
        folder = tmp_path_factory.mktemp(f"salt-key-{size}")
        (folder / "master").write_text(
            f"root_dir: {folder}\npki_dir: {folder}/pki\ncachedir: {folder}/cache\n"
            f"log_file: {folder}/master.log\nkey_logfile: {folder}/key.log\n"
        )
        command = [
            str(SALT_KEY),
            "-c",
            str(folder),
            "--gen-keys=minion",
            f"--gen-keys-dir={folder}",
        ]
        if size != 2048:
            command.append(f"--keysize={size}")
        run = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=120)
        pub = folder / "minion.pub"
        assert run.returncode == 0 and pub.is_file(), run.stdout + run.stderr
        made[size] = pub.read_text()
    return made


# --- what it accepts -----------------------------------------------------------------------


@pytest.mark.parametrize("size", sorted(TAGS_PER_SIZE))
def test_to_tags_then_from_tags_gives_the_key_back(size):
    published = pubkey.to_tags(pem_of(size))

    assert list(published) == [f"{KEY_TAG_PREFIX}{i}" for i in range(TAGS_PER_SIZE[size])]
    values = list(published.values())
    assert all(len(v) == pubkey.TAG_VALUE_MAX for v in values[:-1])
    assert 0 < len(values[-1]) <= pubkey.TAG_VALUE_MAX
    assert "".join(values) == text_of(size)
    # cryptography's PEM is salt-key's layout too: 64 columns, a newline at the end
    assert pubkey.from_tags(published) == pem_of(size)
    assert pubkey.has_key_tags(published)
    assert pubkey.key_tags(published) == dict(enumerate(values))


@pytest.mark.parametrize("size", [2048, 3072, 4096])
def test_from_tags_is_exactly_the_pem_salt_key_writes_and_salt_accepts_it(salt_pubs, size):
    written = salt_pubs[size]
    key = serialization.load_pem_public_key(written.encode())
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == size
    published = pubkey.to_tags(written)
    assert len(published) == TAGS_PER_SIZE[size]

    stored = pubkey.from_tags(published)

    assert stored == written  # byte for byte, trailing newline included
    assert salt_says_same(stored, written)
    assert salt_says_same(stored, written.strip())  # what the minion sends (clean_key'd)
    assert pubkey.same_key(stored, written)
    assert pubkey.key_id(stored) == pubkey.key_id(written.strip() + "\r\n")
    # the shell way (the instance script): the PEM's lines joined, cut every 256 characters
    assert pubkey.from_tags(chunked(pem_body(written))) == written


def test_salt_compares_the_pem_layout_so_the_wrapping_matters(salt_pubs):
    """Salt does not strip the newlines inside a key: a PEM wrapped at 76 columns is another
    key to it. So from_tags must write salt-key's exact layout (it does, above)."""
    written = salt_pubs[2048]
    body = pem_body(written)
    rewrapped = "\n".join(
        ["-----BEGIN PUBLIC KEY-----"]
        + [body[i : i + 76] for i in range(0, len(body), 76)]
        + ["-----END PUBLIC KEY-----", ""]
    )
    assert pubkey.same_key(rewrapped, written)  # same key by aws_ork's whitespace-free id
    assert not salt_says_same(rewrapped, written)  # but not to Salt
    assert salt_says_same(pubkey.from_tags(chunked(body)) or "", written)


def test_no_key_tag_is_none_and_other_tags_are_ignored():
    assert pubkey.from_tags({}) is None
    assert pubkey.from_tags({"Name": "web", "salt:minion-fingerprint": "ab:cd"}) is None
    assert not pubkey.has_key_tags({"Name": "web"})
    published = pubkey.to_tags(pem_of(2048))
    beside = {**published, "Name": "web", "salt:minion-fingerprint": "ab:cd", "aws:x": "=="}
    assert pubkey.from_tags(beside) == pem_of(2048)


@pytest.mark.parametrize(
    ("size", "widths"),
    [(2048, [200]), (2048, [136]), (2048, [1, 255]), (4096, [240, 250]), (4096, [256, 256])],
)
def test_chunk_boundaries_elsewhere_still_concatenate_to_the_key(size, widths):
    """The contract is the concatenation: chunks cut elsewhere (each at most 256) are the
    same text, so the same key."""
    text = text_of(size)
    cuts = list(itertools.accumulate(widths))
    parts = [text[a:b] for a, b in itertools.pairwise([0, *cuts, len(text)])]
    assert len(parts) <= 3 and max(map(len, parts)) <= 256
    assert pubkey.from_tags(tags(*parts)) == pem_of(size)


@pytest.mark.parametrize(
    "name",
    [
        "salt:minion-key-01",
        "salt:minion-key-",
        "Salt:minion-key-0",
        "SALT:MINION-KEY-0",
        "salt:minion-key-0 ",
        " salt:minion-key-0",
        "salt:minion-key-+1",
        "salt:minion-key--1",
        "salt:minion-key-0\n",
        "salt:minion-key-\u0661",  # ARABIC-INDIC DIGIT ONE: int() would read it
        "salt:minion-key-1000",
        "salt:minion-keys-0",
        "salt:minion-key_0",
    ],
)
def test_tag_names_that_are_not_key_tags_are_ignored(name):
    value = text_of(2048)[:256]
    assert pubkey.key_tags({name: value}) == {}
    assert pubkey.from_tags({name: value}) is None
    assert pubkey.from_tags({**pubkey.to_tags(pem_of(2048)), name: "garbage"}) == pem_of(2048)


def test_a_three_digit_index_is_a_key_tag_and_so_a_gap():
    published = {**pubkey.to_tags(pem_of(2048)), f"{KEY_TAG_PREFIX}100": "AAAA"}
    assert pubkey.key_tags(published)[100] == "AAAA"
    with pytest.raises(PublishedKeyError, match="without a gap"):
        pubkey.from_tags(published)


# --- what it refuses ----------------------------------------------------------------------


def refused(published: dict[str, str], message: str) -> None:
    with pytest.raises(PublishedKeyError, match=message):
        pubkey.from_tags(published)


def test_a_gap_in_the_indices_is_refused():
    first, second, third = pubkey.to_tags(pem_of(4096)).values()
    refused({f"{KEY_TAG_PREFIX}0": first, f"{KEY_TAG_PREFIX}2": third}, "without a gap")
    refused({f"{KEY_TAG_PREFIX}1": first, f"{KEY_TAG_PREFIX}2": second}, "without a gap")
    refused({f"{KEY_TAG_PREFIX}1": first + second + third}, "without a gap")


def test_more_than_three_tags_are_refused():
    text = text_of(4096)  # 736 characters: four tags of 184
    refused(chunked(text, 184), "4 key tags: at most 3")
    assert len(chunked(text, 184)) == 4


def test_a_value_longer_than_256_is_refused():
    text = text_of(2048)
    refused(tags(text[:300], text[300:]), "longer than 256")
    refused(tags(text), "longer than 256")
    refused(tags(text[:257], text[257:]), "longer than 256")
    assert pubkey.from_tags(tags(text[:256], text[256:])) == pem_of(2048)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: "!" + t[1:], id="not-base64"),
        pytest.param(lambda t: t[:100] + "\u00e9" + t[101:], id="non-ascii"),
        pytest.param(lambda t: t.rstrip("="), id="missing-padding"),
        pytest.param(lambda t: t[:-2] + "=", id="short-padding"),
        pytest.param(lambda t: t + "==", id="padding-after-padding"),
        pytest.param(lambda t: t.replace("+", "-").replace("/", "_"), id="url-safe-alphabet"),
        pytest.param(lambda t: t[:64] + "\n" + t[64:], id="newline-inside"),
        pytest.param(lambda t: t[:64] + " " + t[64:], id="space-inside"),
        pytest.param(lambda t: t[:64] + "\t" + t[64:], id="tab-inside"),
        pytest.param(lambda t: t[:64] + "\r\n" + t[64:], id="crlf-inside"),
        pytest.param(lambda t: t + "\n", id="trailing-newline"),
        pytest.param(lambda t: " " + t, id="leading-space"),
        pytest.param(lambda t: t[:100] + "=" + t[101:], id="padding-in-the-middle"),
    ],
)
def test_text_that_is_not_strict_standard_base64_is_refused(mangle):
    text = text_of(4096)  # ends in "==": the padding cases need it
    assert text.endswith("==") and ("+" in text or "/" in text)
    mangled = mangle(text)
    assert mangled != text
    parts = [mangled[i : i + 250] for i in range(0, len(mangled), 250)]
    refused(tags(*parts), "not standard base64")


def test_non_canonical_base64_with_trailing_bits_set_is_refused():
    text = text_of(4096)  # "xY==": the last character carries 2 bits and 4 zero bits
    last = ALPHABET.index(text[-3])
    assert last & 0b1111 == 0
    changed = text[:-3] + ALPHABET[last | 0b0001] + "=="
    assert base64.b64decode(changed) == base64.b64decode(text)  # Python alone accepts it
    refused(chunked(changed), "not canonical base64")
    three = text_of(3072)  # "xyZ=": 2 spare bits
    last = ALPHABET.index(three[-2])
    assert last & 0b11 == 0
    refused(chunked(three[:-2] + ALPHABET[last | 0b10] + "="), "not canonical base64")


def test_der_with_trailing_bytes_is_refused():
    der = spki(private_key(2048).public_key())
    refused(der_tags(der + b"\x00"), "no DER public key")
    refused(der_tags(der + b"\x30\x00"), "no DER public key")  # an empty SEQUENCE after it


def test_a_pkcs1_rsa_public_key_instead_of_spki_is_refused():
    public = private_key(2048).public_key()
    pkcs1 = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    refused(der_tags(pkcs1), "not a canonical SubjectPublicKeyInfo")


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP256R1()).public_key(), id="ec-p256"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP384R1()).public_key(), id="ec-p384"),
        pytest.param(lambda: ed25519.Ed25519PrivateKey.generate().public_key(), id="ed25519"),
    ],
)
def test_a_key_that_is_not_rsa_is_refused(key):
    refused(der_tags(spki(key())), "not RSA")


def test_an_unknown_algorithm_is_refused_not_crashed_on():
    """An SPKI whose algorithm OID cryptography does not know (rsaEncryption's last arc
    changed): cryptography raises UnsupportedAlgorithm, which is no ValueError."""
    der = spki(private_key(2048).public_key())
    oid = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1
    at = der.index(oid) + len(oid) - 1
    refused(der_tags(der[:at] + b"\x63" + der[at + 1 :]), "no DER public key")


def test_rsa_1024_is_refused():
    published = der_tags(spki(private_key(1024).public_key()))
    assert len(published) == 1
    refused(published, "RSA-1024 key, not 2048/3072/4096")


def test_rsa_with_exponent_3_is_refused():
    modulus = private_key(2048).public_key().public_numbers().n
    weak = rsa.RSAPublicNumbers(3, modulus).public_key()
    refused(der_tags(spki(weak)), "exponent is not 65537")


@pytest.mark.parametrize("size", [2048, 3072, 4096])
def test_values_swapped_between_indices_are_refused(size):
    values = list(pubkey.to_tags(pem_of(size)).values())
    for order in itertools.permutations(values):
        if list(order) == values:
            continue
        with pytest.raises(PublishedKeyError):
            pubkey.from_tags(tags(*order))


def test_decode_and_to_pem_refuse_alone_too():
    with pytest.raises(PublishedKeyError, match="not standard base64"):
        pubkey.decode("")
    with pytest.raises(PublishedKeyError, match="no DER public key"):
        pubkey.to_pem(b"")
    assert pubkey.to_pem(spki(private_key(3072).public_key())) == pem_of(3072)


# --- properties -----------------------------------------------------------------------------


def is_key_tag_name(name: str) -> int | None:
    """The index of a key tag, by the contract's words (not the module's regex): the prefix,
    then a decimal index without a leading zero, at most three ASCII digits."""
    if not name.startswith(KEY_TAG_PREFIX):
        return None
    rest = name[len(KEY_TAG_PREFIX) :]
    if not (rest.isascii() and rest.isdigit() and len(rest) <= 3 and str(int(rest)) == rest):
        return None
    return int(rest)


def assert_exactly_a_valid_encoding(published: dict[str, str], pem: str | None) -> None:
    """What a returned key must be: the key tags, numbered 0.. without a gap, at most 3 and
    256 characters each, concatenate to exactly the canonical base64 of this RSA key's SPKI,
    whose PEM (salt-key's layout) is what came back."""
    parts = {i: v for k, v in published.items() if (i := is_key_tag_name(k)) is not None}
    if pem is None:
        assert parts == {}
        return
    assert sorted(parts) == list(range(len(parts)))
    assert 1 <= len(parts) <= 3
    assert all(len(v) <= 256 for v in parts.values())
    text = "".join(parts[i] for i in range(len(parts)))
    key = serialization.load_pem_public_key(pem.encode("ascii"))
    assert isinstance(key, rsa.RSAPublicKey)
    assert key.key_size in pubkey.KEY_SIZES
    assert key.public_numbers().e == 65537
    assert base64.b64encode(spki(key)).decode("ascii") == text
    body = pem_body(pem)
    assert body == text
    assert pem == "\n".join(
        ["-----BEGIN PUBLIC KEY-----"]
        + [body[i : i + 64] for i in range(0, len(body), 64)]
        + ["-----END PUBLIC KEY-----", ""]
    )


NAMES = st.one_of(
    st.sampled_from(
        [f"{KEY_TAG_PREFIX}{i}" for i in range(5)]
        + [f"{KEY_TAG_PREFIX}01", KEY_TAG_PREFIX, "Salt:minion-key-0", f"{KEY_TAG_PREFIX}100"]
        + ["salt:minion-fingerprint", "Name", "aws:autoscaling:groupName"]
    ),
    st.text(max_size=20),
    st.text(max_size=4).map(lambda s: KEY_TAG_PREFIX + s),
)
SIZES = st.sampled_from([1024, 2048, 3072, 4096])
VALUES = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=ALPHABET + "=-_ \n", max_size=300),
    st.tuples(SIZES, st.integers(0, 800), st.integers(0, 800)).map(
        lambda t: text_of(t[0])[t[1] : t[1] + t[2]]
    ),
)


@PROPERTY
@given(st.dictionaries(NAMES, VALUES, max_size=6))
def test_arbitrary_tags_give_a_refusal_or_exactly_the_key_they_encode(published):
    try:
        pem = pubkey.from_tags(published)
    except PublishedKeyError as exc:
        assert str(exc)
        return
    assert_exactly_a_valid_encoding(published, pem)


@st.composite
def mangled_tags(draw: st.DrawFn) -> tuple[dict[str, str], str | None]:
    """A real key's tags, maybe mangled (a character, a DER byte, an index, the order), cut at
    random points: the tags and the PEM they must give when nothing was mangled."""
    size = draw(st.sampled_from([2048, 3072, 4096]))
    text, expected = text_of(size), pem_of(size)
    how = draw(st.sampled_from(["none", "char", "insert", "delete", "der-byte", "der-bytes"]))
    if how == "char":
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.sampled_from(ALPHABET + "=-_ \n")) + text[at + 1 :]
    elif how == "insert":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(min_size=1, max_size=8)) + text[at:]
    elif how == "delete":
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + text[at + draw(st.integers(1, 8)) :]
    elif how.startswith("der"):
        der = bytearray(base64.b64decode(text))
        for _ in range(1 if how == "der-byte" else draw(st.integers(2, 5))):
            der[draw(st.integers(0, len(der) - 1))] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            der = der[: draw(st.integers(0, len(der)))] + draw(st.binary(max_size=4))
        text = base64.b64encode(bytes(der)).decode("ascii")
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(text) - 1)), max_size=3))))
    parts = [text[a:b] for a, b in itertools.pairwise([0, *cuts, len(text)])]
    indices = list(range(len(parts)))
    reordered = draw(st.sampled_from(["kept", "permuted", "shifted"]))
    if reordered == "permuted":
        indices = draw(st.permutations(indices))
    elif reordered == "shifted":
        indices = [i + 1 for i in indices]
    published = {f"{KEY_TAG_PREFIX}{i}": part for i, part in zip(indices, parts, strict=True)}
    published.update(draw(st.dictionaries(st.sampled_from(["Name", "x", "salt:y"]), st.text())))
    intact = how == "none" and (reordered == "kept" or len(parts) == 1 and reordered != "shifted")
    return published, (expected if intact else None)


@PROPERTY
@given(mangled_tags())
def test_a_key_cut_anywhere_decodes_and_a_mangled_one_only_to_what_it_encodes(case):
    published, expected = case
    try:
        pem = pubkey.from_tags(published)
    except PublishedKeyError:
        if expected is not None:  # intact: refused only for a cut longer than 256 or > 3 tags
            parts = pubkey.key_tags(published)
            assert len(parts) > 3 or max(len(v) for v in parts.values()) > 256
        return
    if expected is not None:
        assert pem == expected
    assert_exactly_a_valid_encoding(published, pem)
