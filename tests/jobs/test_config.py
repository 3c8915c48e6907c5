"""Config loading: valid files load, every bad key is reported with its file, line and key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli import main
from jobs.config import load_config
from jobs.errors import ConfigError

GOOD = """\
[remotes.home]
url = "http://127.0.0.1:5212"
email = "me@example.com"
password_env = "FERRY_TEST_PASSWORD"

[state]
path = "state"

[defaults]
transfers = 2
exclude = ["__pycache__/**"]

[[jobs]]
name = "photos"
kind = "upload"
source = "photos"
target = "home:/backup/photos"
schedule = "0 3 * * *"
max_size = "1.5GB"
bwlimit = { "08:00" = "512KiB", "19:00" = "off" }

[[jobs]]
name = "restore"
kind = "sync"
mode = "mirror"
source = "home:/backup/photos"
target = "restore"
max_delete = 10
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ferry.toml"
    path.write_text(text)
    return path


def test_good_config_loads_with_defaults_and_relative_paths(tmp_path: Path) -> None:
    """A valid file loads; defaults fill jobs; relative paths resolve beside the file."""
    config = load_config(write(tmp_path, GOOD), tmp_path / "default-state")
    photos = config.job("photos")
    assert photos is not None
    assert photos.transfers == 2
    assert photos.exclude == ("__pycache__/**",)
    assert photos.source.path == str(tmp_path / "photos")
    assert photos.target.remote == "home"
    assert photos.max_size == 1_500_000_000
    assert config.state_dir == tmp_path / "state"
    restore = config.job("restore")
    assert restore is not None
    assert restore.mode == "mirror"
    assert not restore.upload


# (description, old text, new text, expected line, expected key)
BAD_CASES = [
    (
        "unknown job key",
        'schedule = "0 3 * * *"',
        'schedule = "0 3 * * *"\nschedul = "x"',
        19,
        "jobs[0].schedul",
    ),
    ("wrong type", "transfers = 2", 'transfers = "2"', 10, "defaults.transfers"),
    ("bad glob", 'exclude = ["__pycache__/**"]', 'exclude = ["[abc"]', 11, "defaults.exclude"),
    ("bad cron", 'schedule = "0 3 * * *"', 'schedule = "61 3 * * *"', 18, "jobs[0].schedule"),
    (
        "unknown remote",
        'target = "home:/backup/photos"',
        'target = "nas:/backup/photos"',
        17,
        "jobs[0].target",
    ),
    ("bad size", 'max_size = "1.5GB"', 'max_size = "1.5 parsecs"', 19, "jobs[0].max_size"),
    ("bad kind", 'kind = "upload"', 'kind = "copy"', 15, "jobs[0].kind"),
    ("bad mode", 'mode = "mirror"', 'mode = "move"', 25, "jobs[1].mode"),
    ("bad compare", "max_delete = 10", 'max_delete = 10\ncompare = "md5"', 29, "jobs[1].compare"),
    ("negative max_delete", "max_delete = 10", "max_delete = -1", 28, "jobs[1].max_delete"),
    ("bad bwlimit time", '"08:00" = "512KiB"', '"8am" = "512KiB"', 20, "jobs[0].bwlimit"),
    (
        "password in file",
        'password_env = "FERRY_TEST_PASSWORD"',
        'password = "hunter2"',
        4,
        "remotes.home.password",
    ),
    ("bad url", 'url = "http://127.0.0.1:5212"', 'url = "ftp://x"', 2, "remotes.home.url"),
    ("unknown table", "[state]", "[stat]", 6, "stat"),
    ("missing source", 'source = "photos"\n', "", 13, "jobs[0].source"),
    ("upload from remote", 'source = "photos"', 'source = "home:/x"', 15, "jobs[0].kind"),
    ("duplicate name", 'name = "restore"', 'name = "photos"', 23, "jobs[1].name"),
    ("transfers too high", "transfers = 2", "transfers = 1000", 10, "defaults.transfers"),
    (
        "bad duration",
        "max_delete = 10",
        'max_delete = 10\nmax_duration = "6 hours"',
        29,
        "jobs[1].max_duration",
    ),
    ("bad toml", 'email = "me@example.com"', "email = me@example.com", 3, "email"),
    ("mirror on upload", 'kind = "upload"', 'kind = "upload"\nmode = "mirror"', 16, "jobs[0].mode"),
    (
        "missing ca bundle",
        'password_env = "FERRY_TEST_PASSWORD"',
        'password_env = "FERRY_TEST_PASSWORD"\nca_bundle = "no-such-ca.pem"',
        5,
        "remotes.home.ca_bundle",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "line", "key"),
    [case[1:] for case in BAD_CASES],
    ids=[case[0] for case in BAD_CASES],
)
def test_bad_config_exits_2_naming_file_line_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, line: int, key: str
) -> None:
    """`ferry validate` exits 2 and names the file, the line and the key of the problem."""
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{path}:{line}: {key}:" in err, err


def test_all_problems_are_listed_at_once(tmp_path: Path) -> None:
    """Several bad keys in one file give one issue each, in line order."""
    text = GOOD.replace("transfers = 2", 'transfers = "x"').replace('kind = "upload"', "kind = 3")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), tmp_path)
    keys = [issue.key for issue in info.value.issues]
    assert keys == ["defaults.transfers", "jobs[0].kind"]


def test_validate_subprocess_contacts_nothing_and_prints_jobs(tmp_path: Path) -> None:
    """`python -m jobs validate` on a good file exits 0 and lists the jobs."""
    done = subprocess.run(
        [sys.executable, "-m", "jobs", "validate", str(write(tmp_path, GOOD))],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "photos: upload" in done.stdout
    assert "restore: sync (mirror)" in done.stdout


def test_missing_password_env_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose password variable is unset exits 2 naming password_env; nothing is contacted."""
    monkeypatch.delenv("FERRY_TEST_PASSWORD", raising=False)
    path = write(tmp_path, GOOD)
    assert main(["run", str(path), "--job", "photos"]) == 2
    assert f"{path}:4: remotes.home.password_env:" in capsys.readouterr().err


def test_password_command_runs_without_shell(tmp_path: Path) -> None:
    """password_command takes an argv list; a failing command is a config error, not a crash."""
    text = GOOD.replace('password_env = "FERRY_TEST_PASSWORD"', 'password_command = ["false"]')
    path = write(tmp_path, text)
    assert main(["run", str(path), "--job", "photos"]) == 2


def test_version_flag_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`ferry --version` prints the installed version and exits 0."""
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("ferry 0.")


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown command is a usage error: exit 2."""
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_unusable_state_folder_exits_2_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A [state] path that is a file is reported as a state error, exit 2."""
    (tmp_path / "state").write_text("not a folder")
    code = main(["status", str(write(tmp_path, GOOD))])
    assert code == 2
    assert "state error" in capsys.readouterr().err


@pytest.mark.anyio
async def test_due_runs_a_scheduled_job_once_per_slot(tmp_path: Path) -> None:
    """--due: a job that never ran is due; right after a run it is not; a day later it is; a
    job without a schedule never is."""
    import sqlite3
    import time
    from datetime import datetime

    from jobs.cli import _is_due
    from jobs.state import StateDB

    config = load_config(write(tmp_path, GOOD), tmp_path)
    scheduled, unscheduled = config.jobs
    async with StateDB.open(tmp_path / "s.db") as db:
        assert await _is_due(db, scheduled, datetime.now())
        run = await db.start_run(await db.job_id(scheduled.name))
        await db.finish_run(run, status="done", exit_code=0, counts={})
        await db.start_run(await db.job_id(unscheduled.name))
        assert not await _is_due(db, scheduled, datetime.now())
        assert not await _is_due(db, unscheduled, datetime.now())
    conn = sqlite3.connect(tmp_path / "s.db")
    with conn:
        conn.execute("UPDATE runs SET started_at = ? WHERE id = ?", (time.time() - 2 * 86400, run))
    conn.close()
    async with StateDB.open(tmp_path / "s.db") as db:
        assert await _is_due(db, scheduled, datetime.now())


def test_unreadable_config_file_names_the_file_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing config file is "FILE: cannot read: ...", with no made-up line or key."""
    missing = tmp_path / "missing.toml"
    assert main(["validate", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ferry: config error: {missing}: cannot read: "), err
    assert ":0:" not in err
    assert "(file)" not in err


def test_empty_password_env_is_reported_as_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password variable that is set but empty is reported as empty, not as unset."""
    monkeypatch.setenv("FERRY_TEST_PASSWORD", "")
    assert main(["run", str(write(tmp_path, GOOD)), "--job", "photos"]) == 2
    err = capsys.readouterr().err
    assert "environment variable FERRY_TEST_PASSWORD is empty" in err, err


@pytest.mark.anyio
async def test_due_looks_past_any_number_of_dry_runs(tmp_path: Path) -> None:
    """--due: a job that just ran is not due, however many `ferry plan` runs came after."""
    from datetime import datetime

    from jobs.cli import _is_due
    from jobs.state import StateDB

    scheduled = load_config(write(tmp_path, GOOD), tmp_path).jobs[0]
    async with StateDB.open(tmp_path / "s.db") as db:
        job_id = await db.job_id(scheduled.name)
        run = await db.start_run(job_id)
        await db.finish_run(run, status="done", exit_code=0, counts={})
        for _ in range(25):
            dry = await db.start_run(job_id)
            await db.finish_run(dry, status="dry_run", exit_code=0, counts={})
        assert not await _is_due(db, scheduled, datetime.now())


def test_ca_bundle_resolves_beside_the_file_and_must_hold_certificates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative ca_bundle is read beside the config file, whatever the working folder; a
    file without certificates is a config error naming the key."""
    from tests.jobs.tls import self_signed

    cert, _ = self_signed(tmp_path / "certs")
    text = GOOD.replace(
        'password_env = "FERRY_TEST_PASSWORD"',
        'password_env = "FERRY_TEST_PASSWORD"\nca_bundle = "certs/cert.pem"',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(write(tmp_path, text), tmp_path)
    assert config.remotes["home"].ca_bundle == cert

    cert.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), tmp_path)
    [issue] = info.value.issues
    assert (issue.line, issue.key) == (5, "remotes.home.ca_bundle")


def test_unusable_state_folder_during_a_run_exits_2_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token cache folder that cannot be made stops `ferry run` as a state error, exit 2."""
    monkeypatch.setenv("FERRY_TEST_PASSWORD", "not-used")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "tokens").write_text("a file where the token folder goes")
    code = main(["run", str(write(tmp_path, GOOD)), "--job", "photos"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "state error" in err
    assert "Traceback" not in err


ONE_PASS = """\
[remotes.emu]
url = "http://127.0.0.1:5212"
email = "me@example.com"
password_env = "FERRY_TEST_PASSWORD"

[remotes.bad]
url = "ftp://x"
email = "me@example.com"

[[jobs]]
name = "a"
kind = "sync"
source = "emu:/x"
target = "emu:/y"
schedul = "0 3 * * *"

[[jobs]]
name = "a"
kind = "upload"
source = "src"
target = "nas:/b"
schedule = "61 3 * * *"
bwlimit = "0"
min_size = "10MiB"
max_size = "1MiB"
"""


def test_field_errors_do_not_hide_cross_field_rules(tmp_path: Path) -> None:
    """One pass reports field errors and the cross-field rules of the same (broken) jobs."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, ONE_PASS), tmp_path)
    found = {(issue.line, issue.key, issue.message) for issue in info.value.issues}
    assert found == {
        (7, "remotes.bad.url", "expected an http:// or https:// URL, got 'ftp://x'"),
        (6, "remotes.bad", "set exactly one of password_env or password_command"),
        (12, "jobs[0].kind", "sync needs exactly one side to be a REMOTE:/path"),
        (15, "jobs[0].schedul", "unknown key"),
        (18, "jobs[1].name", "duplicate job name 'a'"),
        (21, "jobs[1].target", "unknown remote 'nas' (known: bad, emu)"),
        (
            22,
            "jobs[1].schedule",
            "invalid cron expression '61 3 * * *' (expected e.g. '0 3 * * *')",
        ),
        (23, "jobs[1].bwlimit", 'a rate of 0 would stall every transfer; use "off" for no limit'),
        (24, "jobs[1].min_size", "min_size is larger than max_size"),
    }, sorted(found)


NO_EFFECT = """\
[remotes.home]
url = "http://127.0.0.1:5212"
email = "me@example.com"
password_env = "FERRY_TEST_PASSWORD"

[defaults]
max_delete = 5
thumbnails = true
follow_symlinks = true

[[jobs]]
name = "up"
kind = "upload"
source = "photos"
target = "home:/backup"
max_delete = 10
thumbnails = true

[[jobs]]
name = "down"
kind = "download"
source = "home:/backup"
target = "restore"
max_delete = 10
follow_symlinks = true

[[jobs]]
name = "copy"
kind = "sync"
mode = "copy"
source = "photos"
target = "home:/copy"
max_delete = 10
thumbnails = "thumbs"

[[jobs]]
name = "zero"
kind = "sync"
mode = "mirror"
source = "home:/backup"
target = "mirror"
max_transfer = "0"
max_duration = "0s"
max_age = 0
"""


def test_settings_that_do_nothing_or_block_everything_are_errors(tmp_path: Path) -> None:
    """A job's own max_delete without mirror, thumbnails on an upload, follow_symlinks on a
    download and a zero max_transfer / max_duration / max_age are config errors."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, NO_EFFECT), tmp_path)
    found = [(issue.line, issue.key) for issue in info.value.issues]
    assert found == [
        (16, "jobs[0].max_delete"),
        (17, "jobs[0].thumbnails"),
        (24, "jobs[1].max_delete"),
        (25, "jobs[1].follow_symlinks"),
        (33, "jobs[2].max_delete"),
        (34, "jobs[2].thumbnails"),
        (42, "jobs[3].max_transfer"),
        (43, "jobs[3].max_duration"),
        (44, "jobs[3].max_age"),
    ], [str(issue) for issue in info.value.issues]
    messages = {issue.key: issue.message for issue in info.value.issues}
    assert messages["jobs[0].max_delete"] == (
        'max_delete applies to mode = "mirror" only; this job never deletes'
    )
    assert "would stop every run before its first file" in messages["jobs[3].max_transfer"]


def test_defaults_that_do_not_apply_to_a_job_are_not_errors(tmp_path: Path) -> None:
    """Inherited max_delete, thumbnails and follow_symlinks apply only where they mean something."""
    text = NO_EFFECT.split("[[jobs]]")[0] + "\n".join(
        [
            '[[jobs]]\nname = "up"\nkind = "upload"\nsource = "photos"\ntarget = "home:/b"',
            '[[jobs]]\nname = "down"\nkind = "download"\nsource = "home:/b"\ntarget = "r"',
            '[[jobs]]\nname = "m"\nkind = "sync"\nmode = "mirror"\nsource = "m"\ntarget = "home:/"',
        ]
    )
    config = load_config(write(tmp_path, text), tmp_path)
    assert [job.max_delete for job in config.jobs] == [5, 5, 5]


def test_zero_limits_in_defaults_are_errors(tmp_path: Path) -> None:
    """A zero max_transfer in [defaults] would block every job: reported at defaults."""
    text = GOOD.replace("transfers = 2", "transfers = 2\nmax_transfer = 0")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), tmp_path)
    assert [(i.line, i.key) for i in info.value.issues] == [(11, "defaults.max_transfer")]


def test_password_command_string_is_split_like_a_shell_but_needs_no_shell(tmp_path: Path) -> None:
    """A string command is split with shell quoting rules; shell operators in it are errors."""
    quoted = GOOD.replace(
        'password_env = "FERRY_TEST_PASSWORD"', "password_command = \"printf %s 'a b' $HOME\""
    )
    remote = load_config(write(tmp_path, quoted), tmp_path).remotes["home"]
    assert remote.password_command == ("printf", "%s", "a b", "$HOME")

    for command in ("pass show home | head -1", "get-pw > /dev/null", "a && b", "a; b"):
        piped = GOOD.replace(
            'password_env = "FERRY_TEST_PASSWORD"', f'password_command = "{command}"'
        )
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, piped), tmp_path)
        [issue] = info.value.issues
        assert (issue.line, issue.key) == (4, "remotes.home.password_command"), command
        assert "runs without a shell" in issue.message
