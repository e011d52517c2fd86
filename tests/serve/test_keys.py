"""API keys and the server's options, through the real commands: `retina-seg-serve-key` makes a key and prints
it once, the key file holds only its hash, and `retina-seg-serve` refuses an unusable key file, TLS pair or
option with one line (exit 2) before it downloads or loads anything."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from retina_seg.serve.keys import name_of, read_keys
from tests.serve.certificates import make_certificates

BIN = Path(sys.executable).parent


def make_key(name: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "retina-seg-serve-key"), name, "--file", str(path)], capture_output=True,
                          text=True, timeout=60)


def test_a_new_key_is_printed_once_and_stored_as_its_hash(tmp_path):
    keys = tmp_path / "keys"
    first, second = make_key("clinic-a", keys), make_key("prometheus", keys)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    key_a, key_b = first.stdout.strip(), second.stdout.strip()
    assert key_a.startswith("rsk_") and len(key_a) == 4 + 43 and key_a != key_b  # 32 random bytes, base64url
    assert first.stderr.strip() == (f"added key 'clinic-a' to {keys} (only its SHA-256 is stored: this is the one "
                                    "time the key is shown)")
    text = keys.read_text()
    assert text == (f"clinic-a:{hashlib.sha256(key_a.encode()).hexdigest()}\n"
                    f"prometheus:{hashlib.sha256(key_b.encode()).hexdigest()}\n")
    assert key_a not in text and keys.stat().st_mode & 0o777 == 0o600
    stored = read_keys(keys)
    assert name_of(key_a, stored) == "clinic-a" and name_of(key_b, stored) == "prometheus"
    assert name_of(key_a[:-1], stored) is None and name_of("", stored) is None


def test_a_second_key_of_the_same_name_or_a_bad_name_is_refused(tmp_path):
    keys = tmp_path / "keys"
    assert make_key("clinic-a", keys).returncode == 0
    before = keys.read_text()
    again = make_key("clinic-a", keys)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.strip() == (f"error: --file {keys}: already holds a key named 'clinic-a' (delete its line "
                                    "to replace it)")
    bad = make_key("clinic a", keys)
    assert bad.returncode == 2 and bad.stderr.startswith("error: key name 'clinic a': expected 1-64 letters")
    assert keys.read_text() == before


SERVE = [str(BIN / "retina-seg-serve"), "runs:/0123456789abcdef/model"]  # never reached: the options fail first


def serve(*options: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SERVE, *options], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("tls"))


def test_unusable_options_stop_the_server_with_one_line_before_any_work(tmp_path, certificates):
    leaked = "rsk_" + "x" * 43  # a key pasted into the key file by mistake: never echoed
    (tmp_path / "pasted").write_text(f"# keys\nclinic-a:{leaked}\n")
    (tmp_path / "twice").write_text(f"a:{'0' * 64}\na:{'1' * 64}\n")
    (tmp_path / "empty").write_text("# no keys yet\n")
    cases = {
        ("--api-keys", str(tmp_path / "pasted")):
            f"--api-keys {tmp_path / 'pasted'}: line 2 is not 'name:<64 hex digits of SHA-256>' (make keys with "
            "retina-seg-serve-key NAME --file FILE)",
        ("--api-keys", str(tmp_path / "twice")): f"--api-keys {tmp_path / 'twice'}: line 2 repeats the key name 'a'",
        ("--api-keys", str(tmp_path / "empty")):
            f"--api-keys {tmp_path / 'empty'}: holds no key (make one with retina-seg-serve-key NAME --file "
            f"{tmp_path / 'empty'})",
        ("--api-keys", str(tmp_path / "absent")): f"--api-keys {tmp_path / 'absent'}: cannot be read "
                                                   "(FileNotFoundError)",
        ("--metrics-need-key",): "--metrics-need-key needs --api-keys FILE: the keys /metrics would ask for",
        ("--ssl-certfile", str(certificates.certificate)):
            "--ssl-certfile and --ssl-keyfile go together: give both, or neither",
        ("--ssl-certfile", str(certificates.authority), "--ssl-keyfile", str(certificates.key)):
            f"--ssl-certfile {certificates.authority} / --ssl-keyfile {certificates.key}: not a PEM certificate and "
            "its private key (KEY_VALUES_MISMATCH)",
        ("--workers", "0"): "--workers 0: expected an integer >= 1",
        ("--access-log", str(tmp_path / "no" / "log")): f"--access-log {tmp_path / 'no' / 'log'}: folder "
                                                         f"'{tmp_path / 'no'}' does not exist",
    }
    for options, message in cases.items():
        done = serve(*options)
        assert done.returncode == 2, (options, done.stderr[-2000:])
        assert done.stderr == f"error: {message}\n", options
        assert leaked not in done.stderr
