"""MinionIdTemplate: templates parsed, ids rendered from EC2's answer, the result always safe,
and the instance -> minion id mapping kept durably in StateDir."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aws_ork.base.ids import MAX_LENGTH, is_minion_id
from aws_ork.base.naming import NamingError, Template, parse_template
from aws_ork.memory import MinionNames

INSTANCE = "i-0123456789abcdef0"
OTHER = "i-0fedcba9876543210"
GROUP_TAG = "aws:autoscaling:groupName"


@pytest.mark.parametrize(
    "text",
    [
        "{instance_id}",
        "{tag:Name}",
        "{asg_name}-{instance_id}",
        "{private_dns_name}",
        "web.{tag:Role}-{instance_id}",
        "{tag:aws:cloudformation:stack-name}-{tag:Name}",
    ],
)
def test_templates_with_known_fields_and_a_unique_one_are_accepted(text):
    assert parse_template(text).text == text


@pytest.mark.parametrize(
    "text, why",
    [
        ("{asg_name}", "tells instances apart"),
        ("web", "tells instances apart"),
        ("{instance_id}{hostname}", "unknown field {hostname}"),
        ("{tag:}", "unknown field {tag:}"),
        ("{instance_id}/x", "text outside the fields"),
        ("*{instance_id}", "text outside the fields"),
        ("{instance_id} x", "text outside the fields"),
        (".{instance_id}", "must not start with"),
        ("{instance_id", "unmatched"),
    ],
)
def test_templates_that_could_make_an_unsafe_or_shared_id_are_refused(text, why):
    with pytest.raises(ValueError, match=why.replace("{", r"\{").replace("}", r"\}")):
        parse_template(text)


def test_the_default_template_is_the_instance_id():
    assert Template().identity
    assert Template().render(INSTANCE, {"Name": "web-1"}) == INSTANCE


def test_fields_come_from_what_ec2_said():
    tags = {"Name": "web-7", GROUP_TAG: "web-asg"}
    dns = "ip-10-0-0-7.us-west-2.compute.internal"
    assert parse_template("{tag:Name}").render(INSTANCE, tags) == "web-7"
    assert (
        parse_template("{asg_name}-{instance_id}").render(INSTANCE, tags) == f"web-asg-{INSTANCE}"
    )
    assert parse_template("{private_dns_name}").render(INSTANCE, tags, private_dns_name=dns) == dns


def test_a_missing_tag_or_dns_name_is_asked_again_but_no_group_is_final():
    with pytest.raises(NamingError) as missing:
        parse_template("{tag:Name}").render(INSTANCE, {})
    assert missing.value.retry and "no tag Name" in missing.value.reason
    with pytest.raises(NamingError) as no_dns:
        parse_template("{private_dns_name}").render(INSTANCE, {})
    assert no_dns.value.retry
    with pytest.raises(NamingError) as no_group:
        parse_template("{asg_name}-{instance_id}").render(INSTANCE, {})
    assert not no_group.value.retry


@pytest.mark.parametrize(
    "value",
    [
        "../minions/x",
        "*",
        "web-?",
        "web[1]",
        ".hidden",
        "-x",
        "web 1",
        "web\n1",
        "",
        "w" * (MAX_LENGTH + 1),
        "wéb",
    ],
)
def test_a_tag_value_that_makes_an_unsafe_id_is_refused_for_good(value):
    with pytest.raises(NamingError) as refused:
        parse_template("{tag:Name}").render(INSTANCE, {"Name": value})
    assert not refused.value.retry
    assert "not a safe minion id" in refused.value.reason
    assert "\n" not in refused.value.reason  # escaped before it can reach a log line


@given(st.text(string.printable + "éß\x00/", max_size=200))
def test_whatever_a_tag_holds_the_id_made_from_it_is_safe(value):
    try:
        minion_id = parse_template("{tag:Name}-x").render(INSTANCE, {"Name": value})
    except NamingError:
        return
    assert is_minion_id(minion_id)
    assert "/" not in minion_id and not minion_id.startswith(".")
    assert not set("*?[]{} \n\\") & set(minion_id) and len(minion_id) <= MAX_LENGTH


def test_the_mapping_survives_a_restart_and_frees_an_id_only_when_released(tmp_path):
    path = tmp_path / "state" / "minion-ids"
    names = MinionNames(path, limit=100)
    names.bind(INSTANCE, "web-7")
    assert (names.minion_of(INSTANCE), names.owner_of("web-7")) == ("web-7", INSTANCE)
    with pytest.raises(ValueError, match="belongs to"):
        names.bind(OTHER, "web-7")

    again = MinionNames(path, limit=100)  # a restart
    assert again.minion_of(INSTANCE) == "web-7"
    again.release(INSTANCE)
    again.bind(OTHER, "web-7")

    third = MinionNames(path, limit=100)
    assert (third.minion_of(INSTANCE), third.owner_of("web-7")) == (None, OTHER)
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_torn_or_forged_line_in_the_file_is_ignored(tmp_path):
    path = tmp_path / "minion-ids"
    path.write_text(
        f"1.0 {INSTANCE} web-7\n2.0 {OTHER} ../etc\n3.0 {OTHER}\nnonsense\n4.0 {OTHER} db 1\n"
    )
    names = MinionNames(path, limit=100)
    assert names.items() == [(INSTANCE, "web-7")]


def test_the_mapping_is_bounded_and_compacted(tmp_path):
    path = tmp_path / "minion-ids"
    names = MinionNames(path, limit=50)
    for n in range(2000):
        instance = f"i-{n:017x}"
        names.bind(instance, f"web-{n}")
        if n % 2:
            names.release(instance)
    assert len(names.items()) <= 50
    assert len(path.read_text().splitlines()) < 1200  # rewritten, not grown without bound
    assert MinionNames(path, limit=50).items() == names.items()


def test_dry_run_remembers_nothing(tmp_path):
    names = MinionNames(tmp_path / "minion-ids", limit=10, dry_run=True)
    names.bind(INSTANCE, "web-7")
    assert not (tmp_path / "minion-ids").exists()
