"""Upload and download throughput of one large file: ``python bench/files.py``.

Against ``taskgate serve --no-workers`` on 127.0.0.1 (local blob storage in a
throw-away data dir), a file of ``--mib`` MiB (100 by default; random bytes after a
WAV header, so that it is an accepted, decodable type) is

- uploaded with ``POST /v1/files`` (multipart, streamed from disk by httpx), and
- downloaded with ``GET /v1/files/{id}/content`` (streamed to a file on disk),

``--runs`` times each; the best run counts. The ceiling is a plain ``cp`` of the same
file on the same disk. Prints MiB/s and the ratios to ``cp``, and writes them as JSON
(``--output``, default ``bench/results/files.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from procs import BENCH_DIR, HOST, answers, free_port, running, taskgate_cli, taskgate_env, wait_for

MIB = 1024 * 1024


def make_file(path: Path, mib: int) -> str:
    """A WAV file of ``mib`` MiB (noise), and its SHA-256."""
    frames = (mib * MIB - 44) // 2
    digest = hashlib.sha256()
    header = io.BytesIO()
    with wave.open(header, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(48_000)
        out.setnframes(frames)
        out.writeframes(b"")
    head = header.getvalue()
    # wave writes the header for the frame count given; the data follows as is.
    with path.open("wb") as out:
        out.write(head)
        digest.update(head)
        left = frames * 2
        while left:
            block = os.urandom(min(left, 4 * MIB))
            out.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def best(runs: int, measure: Callable[[], float]) -> tuple[float, list[float]]:
    times = [measure() for _ in range(runs)]
    return min(times), times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=100, help="file size in MiB")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results" / "files.json")
    parser.add_argument("--keep", action="store_true", help="keep the data dir and logs")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="taskgate-bench-files-"))
    try:
        source = work / "source.wav"
        sha256 = make_file(source, args.mib)
        size = source.stat().st_size

        def copy() -> float:
            target = work / "copy.wav"
            start = time.perf_counter()
            subprocess.run(["cp", str(source), str(target)], check=True)
            elapsed = time.perf_counter() - start
            target.unlink()
            return elapsed

        cp_best, cp_times = best(args.runs, copy)

        data_dir = work / "data"
        data_dir.mkdir()
        port = free_port()
        env = taskgate_env(data_dir, TASKGATE_MAX_UPLOAD_BYTES=str(size + MIB))
        with running(
            [
                sys.executable,
                "-m",
                "taskgate",
                "serve",
                "--host",
                HOST,
                "--port",
                str(port),
                "--no-workers",
                "--no-access-log",
            ],
            log_path=work / "serve.log",
            env=env,
        ) as server:
            base = f"http://{HOST}:{port}"
            wait_for(lambda: answers(f"{base}/healthz"), timeout=60, what="serve", alive=server)
            account = taskgate_cli(data_dir, "accounts", "create", "bench").strip()
            key = taskgate_cli(data_dir, "keys", "create", account).strip()
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=base, headers=headers, timeout=300) as http:
                file_ids: list[str] = []

                def upload() -> float:
                    start = time.perf_counter()
                    with source.open("rb") as handle:
                        response = http.post(
                            "/v1/files",
                            files={"file": ("source.wav", handle, "audio/wav")},
                            data={"purpose": "input"},
                        )
                    elapsed = time.perf_counter() - start
                    if response.status_code != 201:
                        raise RuntimeError(f"upload failed: {response.text}")
                    body = response.json()
                    if body["sha256"] != sha256:
                        raise RuntimeError("the upload's digest differs")
                    file_ids.append(body["id"])
                    return elapsed

                up_best, up_times = best(args.runs, upload)

                def download() -> float:
                    target = work / "download.wav"
                    start = time.perf_counter()
                    with (
                        http.stream("GET", f"/v1/files/{file_ids[-1]}/content") as response,
                        target.open("wb") as out,
                    ):
                        for chunk in response.iter_bytes(MIB):
                            out.write(chunk)
                    elapsed = time.perf_counter() - start
                    if target.stat().st_size != size:
                        raise RuntimeError("the download is short")
                    target.unlink()
                    return elapsed

                down_best, down_times = best(args.runs, download)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    def rate(seconds: float) -> float:
        return size / MIB / seconds

    result: dict[str, Any] = {
        "mib": round(size / MIB, 2),
        "cp_mib_s": round(rate(cp_best), 1),
        "upload_mib_s": round(rate(up_best), 1),
        "download_mib_s": round(rate(down_best), 1),
        "upload_vs_cp": round(cp_best / up_best, 3),
        "download_vs_cp": round(cp_best / down_best, 3),
        "seconds": {"cp": cp_times, "upload": up_times, "download": down_times},
        "load_average": os.getloadavg(),
    }
    print(f"file            {result['mib']} MiB, best of {args.runs}")
    print(f"cp (ceiling)    {result['cp_mib_s']:>8} MiB/s")
    print(
        f"upload          {result['upload_mib_s']:>8} MiB/s  ({result['upload_vs_cp']:.1%} of cp)"
    )
    print(
        f"download        {result['download_mib_s']:>8} MiB/s  "
        f"({result['download_vs_cp']:.1%} of cp)"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
