"""Running a lesson in the kernel of the JupyterLab server ``make lab`` starts.

``make lab`` serves JupyterLab on ``notebooks/``, on localhost, with the repository's ``.venv`` Python as the
kernel. ``execute_in_server`` runs a notebook's code cells one by one in a
kernel the server starts (Jupyter's REST and websocket API, as JupyterLab itself does), so a test can
check that a lesson really completes in the environment a student gets.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

from lab.errors import LabError



def api(url: str, token: str, path: str, body: dict | None = None, method: str | None = None) -> tuple[int, object]:
    """Call the server's REST API; returns (status, decoded JSON)."""
    request = urllib.request.Request(f"{url}/api/{path}", method=method or ("POST" if body is not None else "GET"),
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
        return response.status, json.loads(raw) if raw else None


def wait_until_up(url: str, token: str, timeout: float = 120.0) -> int:
    """Poll ``/api`` until it answers; returns its status."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            return api(url, token, "")[0]
        except OSError as err:
            last = err
            time.sleep(0.5)
    raise LabError(f"JupyterLab did not answer at {url}/api within {timeout:.0f} s ({last}).")


def _message(code: str, session: str) -> dict:
    return {"header": {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "username": "lab",
                       "session": session, "date": "", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}


async def _run_cells(ws_url: str, token: str, cells: list[str], timeout: float) -> list[dict]:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    conn = await websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {token}"}),
                                   max_message_size=1 << 30)
    session, results = uuid.uuid4().hex, []
    try:
        for code in cells:
            request = _message(code, session)
            await conn.write_message(json.dumps(request))
            outputs, error = [], None
            while True:
                raw = await asyncio.wait_for(conn.read_message(), timeout)
                if raw is None:
                    raise LabError("The kernel's websocket closed while a cell was running.")
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != request["header"]["msg_id"]:
                    continue
                kind = msg["header"]["msg_type"]
                if kind == "error":
                    error = f"{msg['content']['ename']}: {msg['content']['evalue']}"
                elif kind in ("stream", "display_data", "execute_result"):
                    outputs.append(msg["content"])
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    break
            results.append({"code": code, "outputs": outputs, "error": error})
            if error:
                break
    finally:
        conn.close()
    return results


def execute_in_server(url: str, token: str, notebook_path: str, timeout: float = 300.0,
                      extra_cells: tuple[str, ...] = ()) -> list[dict]:
    """Run every code cell of ``notebook_path`` (relative to the server's root), then ``extra_cells``, in a new
    kernel session of the server; stops at the first error. Returns one ``{"code", "outputs", "error"}`` per
    cell run."""
    import nbformat

    _, listing = api(url, token, f"contents/{notebook_path}")
    notebook = nbformat.reads(json.dumps(listing["content"]), as_version=4)
    _, session = api(url, token, "sessions", {"path": notebook_path, "type": "notebook", "name": "",
                                              "kernel": {"name": "python3"}})
    kernel = session["kernel"]["id"]
    try:
        ws_url = url.replace("http://", "ws://") + f"/api/kernels/{kernel}/channels"
        cells = [c.source for c in notebook.cells if c.cell_type == "code"] + list(extra_cells)
        with ThreadPoolExecutor(1) as pool:  # a loop of its own, also when the caller's thread runs one
            return pool.submit(asyncio.run, _run_cells(ws_url, token, cells, timeout)).result()
    finally:
        api(url, token, f"sessions/{session['id']}", method="DELETE")
