"""The dashboard is local by default and reads only runs below the folder it was started on."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> set[str]:
    """Local addresses in LISTEN state on ``port`` (Linux /proc/net/tcp and tcp6, hex little-endian IPv4)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                if len(address) == 8:
                    found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
                else:
                    found.add("ipv6:" + address)
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads Linux's socket table")
def test_streamlit_run_app_as_the_readme_says_listens_on_localhost_only(tmp_path):
    port = _free_port()
    # The README's command, run from the repository; only the port (a free one) and headless mode come from
    # the environment, so nothing on the command line makes it local: .streamlit/config.toml does.
    env = {**os.environ, "STREAMLIT_SERVER_PORT": str(port), "STREAMLIT_SERVER_HEADLESS": "true",
           "LAB_RUNS_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("STREAMLIT_SERVER_ADDRESS", None)
    streamlit = Path(sys.executable).with_name("streamlit")
    server = subprocess.Popen([str(streamlit), "run", "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline, addresses = time.monotonic() + 60, set()
        while not addresses and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.3)
            addresses = _listening(port)
        time.sleep(1.0)  # a second socket (e.g. IPv6) would be bound by now
        addresses = _listening(port)
    finally:
        server.terminate()
        output = server.communicate(timeout=20)[0]
    assert addresses == {"127.0.0.1"}, (addresses, output)
    assert "Network URL" not in output and "External URL" not in output, output


@pytest.fixture
def runs_root(tmp_path, smoke_run, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    root = tmp_path / "runs"
    shutil.copytree(smoke_run, root / "good")
    (root / "notes").mkdir()  # not a run: never listed
    (root / "sub").mkdir()
    return root


def test_runs_directory_box_refuses_a_path_outside_the_runs_root(runs_root):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state["runs_dir"] = str(runs_root)
    at.run()
    assert list(at.dataframe[0].value["run"]) == ["good"] and not at.warning  # "notes" is not a run
    for outside in ("/etc", "/", str(runs_root / ".."), str(runs_root.parent)):
        at.sidebar.text_input[0].set_value(outside).run()
        assert not at.exception
        assert any("is outside the runs folder" in e.value for e in at.sidebar.error), outside
        assert at.sidebar.text_input[0].value == str(runs_root)  # the box goes back to the accepted folder
        assert list(at.dataframe[0].value["run"]) == ["good"] and not at.warning
    at.sidebar.text_input[0].set_value(str(runs_root / "sub")).run()  # a folder below the root is fine
    assert not at.sidebar.error and any("make demo" in i.value for i in at.info)


def test_a_symbolic_link_out_of_the_root_is_refused(runs_root):
    (runs_root / "link").symlink_to("/etc")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.session_state["runs_dir"] = str(runs_root)
    at.run()
    at.sidebar.text_input[0].set_value(str(runs_root / "link")).run()
    assert any("is outside the runs folder" in e.value for e in at.sidebar.error)
