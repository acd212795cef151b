"""Start a real ComfyUI server with the pack loaded from outside its tree (for integration tests).

Needs COMFYUI_DIR (a ComfyUI checkout) and a Python with ComfyUI's requirements: COMFYUI_PYTHON, else the
running interpreter. Everything the server writes goes to a temporary folder.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        for sub in ("custom", "models/stylegan", "input", "output", "user", "temp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        # The pack is loaded from outside the ComfyUI tree, as a user's extra custom_nodes folder.
        (root / "custom" / "comfyui-stylegan-studio").symlink_to(REPO, target_is_directory=True)
        (root / "extra_model_paths.yaml").write_text(
            f"sgs_test:\n  base_path: {root}\n  custom_nodes: custom\n  stylegan: models/stylegan\n"
            f"  perceptual: models/perceptual\n  landmarks: models/landmarks\n  text_encoders: models/text_encoders\n"
            f"  arcface: models/arcface\n  latent_mappers: models/latent_mappers\n  weight_shifts: models/weight_shifts\n"
            f"  face_parsing: models/face_parsing\n  encoders: models/encoders\n"
            f"  stylegan_directions: models/stylegan_directions\n")
        settings = root / "user" / "default"
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "comfy.settings.json").write_text(json.dumps({"Comfy.TutorialCompleted": True}))

    @property
    def models(self) -> Path:
        return self.root / "models" / "stylegan"

    @property
    def output(self) -> Path:
        return self.root / "output"

    def start(self, timeout: float = 120) -> None:
        comfy = Path(os.environ["COMFYUI_DIR"])
        python = os.environ.get("COMFYUI_PYTHON", sys.executable)
        cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--extra-model-paths-config", str(self.root / "extra_model_paths.yaml"),
               "--input-directory", str(self.root / "input"), "--output-directory", str(self.output),
               "--user-directory", str(self.root / "user"), "--temp-directory", str(self.root / "temp"),
               "--disable-api-nodes"]
        self.log = open(self.root / "server.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=comfy, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited early:\n{self.read_log()[-3000:]}")
            try:
                self.get("/object_info/SGS_LoadStyleGAN")
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s:\n{self.read_log()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "log", None):
            self.log.close()

    def read_log(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.load(r)

    def post(self, path: str, data) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, data=json.dumps(data).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = r.read()
                return r.status, json.loads(body) if body else {}
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def queue(self, prompt: dict, client_id: str | None = None) -> str:
        """Queue an API-format graph; returns its prompt id."""
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": client_id or str(uuid.uuid4())})
        if status != 200:
            raise AssertionError(f"prompt refused ({status}): {json.dumps(body)[:3000]}")
        return body["prompt_id"]

    def run_prompt(self, prompt: dict, timeout: float = 300, client_id: str | None = None) -> dict:
        """Queue an API-format graph and wait for its history entry."""
        return self.wait(self.queue(prompt, client_id), timeout)

    def wait(self, pid: str, timeout: float = 300) -> dict:
        """Wait for a queued prompt's history entry."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{pid}")
            if pid in history and history[pid].get("status", {}).get("completed") is not None:
                return history[pid]
            time.sleep(0.25)
        raise TimeoutError(f"prompt {pid} did not finish within {timeout} s")


class Listener:
    """The websocket messages ComfyUI sends one client: JSON events as (type, data) and binary frames as
    ('binary', (event type, payload bytes)), collected by a background thread."""

    def __init__(self, server: ComfyServer):
        import websocket  # websocket-client, a dev requirement

        self.client_id = str(uuid.uuid4())
        self.messages: list[tuple[str, object]] = []
        self._ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?clientId={self.client_id}",
                                               timeout=5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import websocket

        while not self._stop.is_set():
            try:
                frame = self._ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (websocket.WebSocketException, OSError):
                return
            if isinstance(frame, bytes):
                self.messages.append(("binary", (int.from_bytes(frame[:4], "big"), frame[4:])))
            elif frame:
                msg = json.loads(frame)
                self.messages.append((msg.get("type"), msg.get("data")))

    def of_type(self, kind: str) -> list:
        return [data for k, data in list(self.messages) if k == kind]

    def wait_for(self, predicate, timeout: float = 120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            for kind, data in list(self.messages):
                if predicate(kind, data):
                    return data
            time.sleep(0.05)
        raise TimeoutError(f"no matching websocket message within {timeout} s")

    def close(self) -> None:
        self._stop.set()
        self._ws.close()
        self._thread.join(timeout=10)
