"""README "Try it offline", pasted as it stands, works on a machine with no photos
(issue 14 item 6): the standalone fake, its `export IMGUR_API_URL=` line, the sample
photos, a dry run, a sync, a no-op and `status`.

The README's commands are run by bash in the repository, with /tmp/ibx made a temporary
folder and `python3` the Python running the tests; nothing else is changed.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys

from conftest import REPO, default_sigint

SECTION = re.compile(r"^## Try it offline\n(.*?)^## ", re.S | re.M)
SH_BLOCK = re.compile(r"```sh\n(.*?)```", re.S)


def readme_blocks() -> list:
    section = SECTION.search((REPO / "README.md").read_text(encoding="utf-8")).group(1)
    return SH_BLOCK.findall(section)


def as_here(command: str, ibx) -> str:
    command = command.replace("/tmp/ibx", str(ibx))
    return re.sub(r"(?m)^python3 ", shlex.quote(sys.executable) + " ", command)


def test_try_it_offline_works_as_pasted(tmp_path):
    start_fake, session = readme_blocks()
    ibx = tmp_path / "ibx"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("IMGUR_", "IMGURBOX_"))}
    env["NO_COLOR"] = "1"
    fake = subprocess.Popen(["bash", "-c", "exec " + as_here(start_fake.strip(), ibx)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, preexec_fn=default_sigint)
    try:
        printed = [fake.stdout.readline() for _ in range(2)]
        export = next(line.strip() for line in printed if line.startswith("export "))
        assert re.fullmatch(r"export IMGUR_API_URL=http://127\.0\.0\.1:\d+/", export), printed
        assert (ibx / "credentials.json").exists()
        lines = [line for line in session.strip().splitlines()]
        assert lines[0].startswith("export IMGUR_API_URL=http://127.0.0.1:PORT/"), lines
        script = "set -e\n" + export + "\n" + as_here("\n".join(lines[1:]), ibx)
        ran = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, text=True,
                             capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
        assert ran.returncode == 0, ran
        assert ran.stdout.count("+ upload Test photos/photo") == 2 * 12, ran.stdout   # dry, real
        assert "nothing to do" in ran.stdout, ran.stdout
        assert "synced: 12 files" in ran.stdout and "to do: nothing" in ran.stdout, ran.stdout
    finally:
        fake.send_signal(signal.SIGINT)
        fake.wait(timeout=10)
        fake.stdout.close()
