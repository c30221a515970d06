"""The scale test (README "Development"): 2,000+ files in 5+ folders against a fake with an
hourly budget, time compressed with ``fake.advance(3600)`` between runs. Each run stops with
exit 4 and says when the limit resets, the next resumes, and at the end every file is in its
album exactly once and a last run has nothing to do (no request).

The budget is Imgur's: 500 credits an hour, about 50 uploads, so the 2,100 files take
over forty runs; every run ends at the limit, and nothing is lost or sent twice across
them.
"""

from __future__ import annotations

import datetime as dt
import re

from imagefiles import png
from mirror_check import assert_mirror, uploads

FOLDERS = 5
FILES_PER_FOLDER = 420          # 2,100 files
USER_LIMIT = 500                # credits an hour, as Imgur: about 50 uploads a run
CLIENT_LIMIT = 100_000          # a day: the application's reserve stays out of the way
RESUMES = re.compile(r"resumes after (\d{4}-\d\d-\d\dT\d\d:\d\d[^\s.]*)")


def test_thousands_of_files_over_many_rate_limited_runs(home, fake):
    fake.user_limit = USER_LIMIT
    fake.client_limit = CLIENT_LIMIT
    folders = [home.folder(f"Folder {k}", {f"p{k}-{i:04d}.png": png(f"{k}/{i}")
                                           for i in range(FILES_PER_FOLDER)})
               for k in range(FOLDERS)]
    total = FOLDERS * FILES_PER_FOLDER
    assert total >= 2000
    home.write_credentials()
    home.write_albums("".join(f"{folder}\n" for folder in folders))

    codes, sent = [], []
    for _ in range(total // (USER_LIMIT // 10) + 3):
        fake.reset_requests()
        r = home.run("sync", "-q", timeout=300)
        codes.append(r.code)
        # Done uploads only: an hour of fake time also expires the access token, so a
        # run may start with uploads refused (403, not performed) and a token refresh.
        run_uploads = [q for q in uploads(fake) if q.status == 200]
        sent.append(len(run_uploads))
        assert not [q for q in fake.api_requests() if q.status == 429], (
            "an upload started that the hour's credits could not pay for")
        assert len(run_uploads) <= USER_LIMIT // 10
        if r.code == 0:
            break
        assert r.code == 4, f"run {len(codes)}: exit {r.code}\n{r.stdout}\n{r.stderr}"
        assert run_uploads, f"run {len(codes)} made no progress"
        match = RESUMES.search(r.stderr)
        assert match, f"run {len(codes)} does not say when the limit resets:\n{r.stderr}"
        reset = dt.datetime.fromisoformat(match.group(1)).timestamp()
        assert fake.now() - 60 <= reset <= fake.now() + 3600 + 60, match.group(0)
        fake.advance(3600)

    assert codes[-1] == 0, codes
    assert codes.count(4) >= 4, f"the budget did not force several runs: {codes}"
    assert sum(sent) == total, f"uploads per run {sent}: {sum(sent)} for {total} files"
    assert_mirror(home, fake, folders)

    fake.reset_requests()
    r = home.run("sync")
    assert r.code == 0, r
    assert fake.api_requests() == []
