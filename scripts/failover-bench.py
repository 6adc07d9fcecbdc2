#!/usr/bin/env python3
"""How long writes stop when the leader master is killed (issue 14's SIGKILL figure).

Starts `tinydfs server --masters 3 --chunkservers 4` in a fresh folder, runs 8 boto3 writers
without SDK retries (1 KB PUTs on 20 keys each, 5 s read timeout), and each round SIGKILLs the
leader master, waits, measures the time from the kill to the acknowledgement of the first write
invoked after it, then starts the killed master again with its own arguments. Prints each round
and the median.

    scripts/setup-test-tools.sh            # once: .venv with boto3
    cargo build --release
    .venv/bin/python scripts/failover-bench.py --rounds 10 [--binary target/release/tinydfs]
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time

import boto3
from botocore.config import Config

ACCESS, SECRET = "failover-bench", "failover-bench-secret"


def leader(binary, data_dir):
    """(pid, id) of the leader master, once `admin status` names one."""
    deadline = time.time() + 60
    while time.time() < deadline:
        out = subprocess.run(
            [binary, "admin", "status", "--json", "--data-dir", data_dir], capture_output=True
        )
        if out.returncode == 0:
            for n in json.loads(out.stdout)["nodes"]:
                if n["role"] == "master" and n["state"] == "leader" and n.get("pid"):
                    return n["pid"], n["id"]
        time.sleep(0.2)
    raise SystemExit("no leader master for 60 s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--binary", default="target/release/tinydfs")
    ap.add_argument("--port", type=int, default=19000)
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    data_dir = tempfile.mkdtemp(prefix="tinydfs-failover-")
    env = dict(os.environ, TINYDFS_ACCESS_KEY_ID=ACCESS, TINYDFS_SECRET_ACCESS_KEY=SECRET)
    server = subprocess.Popen(
        [binary, "server", "--masters", "3", "--chunkservers", "4", "--data-dir", data_dir,
         "--s3-addr", f"127.0.0.1:{a.port}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    restarted = []
    try:
        for line in server.stdout:
            if line.startswith(b"tinydfs is running"):
                break
        s3 = boto3.client(
            "s3", endpoint_url=f"http://127.0.0.1:{a.port}", aws_access_key_id=ACCESS,
            aws_secret_access_key=SECRET, region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, read_timeout=5, connect_timeout=2),
        )
        s3.create_bucket(Bucket="failover")
        acks, stop = [], threading.Event()

        def writer(w):
            i = 0
            while not stop.is_set():
                t0 = time.time()
                try:
                    s3.put_object(Bucket="failover", Key=f"w{w}-{i % 20}", Body=b"x" * 1000)
                    acks.append((t0, time.time()))
                except Exception:
                    pass
                i += 1

        writers = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
        for t in writers:
            t.start()
        gaps = []
        for r in range(a.rounds):
            time.sleep(4)
            pid, mid = leader(binary, data_dir)
            # Its arguments and environment, to start it again as the supervisor did (but not
            # tied to the supervisor's pid).
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[:-1]
            penv = dict(
                l.split(b"=", 1)
                for l in open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
                if b"=" in l and not l.startswith(b"TINYDFS_PARENT_PID")
            )
            killed = time.time()
            os.kill(pid, signal.SIGKILL)
            time.sleep(6)
            after = sorted(end for start, end in acks if start > killed)
            gap = after[0] - killed if after else None
            gaps.append(gap)
            shown = f"{gap:.2f} s" if gap is not None else "none within 6 s"
            print(f"round {r}: SIGKILL leader master {mid}; writes resumed after {shown}", flush=True)
            log = open(os.path.join(data_dir, "logs", f"master-{mid}.log"), "ab")
            restarted.append(
                subprocess.Popen(cmd, env=penv, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
            )
        stop.set()
        for t in writers:
            t.join()
        measured = [g for g in gaps if g is not None]
        if measured:
            print(f"median {statistics.median(measured):.2f} s over {len(measured)} rounds "
                  f"(min {min(measured):.2f}, max {max(measured):.2f}); "
                  f"{len(gaps) - len(measured)} rounds without writes within 6 s")
    finally:
        for p in restarted:
            p.kill()
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
