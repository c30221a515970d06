"""Authorization (issue 3; README "Getting started", "When the token stops working",
"Exit codes": 5), end to end.

`auth` is driven as a person uses it, in a pseudo-terminal (pexpect), against the fake
Imgur server; sync-time token handling runs imgurbox.py as a plain subprocess. Every
output a test sees (pty transcript, stdout, stderr, log.txt) goes through `scan()`,
which fails the test if an access token, a refresh token or a client secret shows.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
from pathlib import Path

import pexpect
import pytest
import requests

from imagefiles import jpeg
from mirror_check import done_uploads, requests_to, token_requests

CLIENT_ID = "test-client-id"
CLIENT_SECRET = "test-client-secret"
AUTHORIZE_URL = re.compile(r"(http://127\.0\.0\.1:\d+/oauth2/authorize\?\S+)")


# --------------------------------------------------------------------------- secret scan

# Every (test, what, text) scanned so far, for the final all-scenario scan.
def secrets_of(fake, extra=()) -> set:
    """Every token the fake ever issued, every client secret, and ``extra``."""
    with fake._lock:
        found = set(fake._access_tokens) | set(fake._refresh_tokens)
        found |= set(fake.clients.values())
    return found | {s for s in extra if s}


def outputs_of(home, result=None, transcript=None) -> dict:
    """The texts to scan: stdout, stderr, the pty transcript, log.txt and its rotations."""
    texts = {}
    if result is not None:
        texts["stdout"], texts["stderr"] = result.stdout, result.stderr
    if transcript is not None:
        texts["terminal"] = transcript
    for log in sorted(home.path.glob("log.txt*")):
        texts[log.name] = log.read_text(encoding="utf-8", errors="replace")
    return texts


def scan(home, fake, result=None, transcript=None, extra=()) -> None:
    """Assert that no secret and no traceback shows in what a run wrote."""
    secrets = secrets_of(fake, extra)
    texts = outputs_of(home, result, transcript)
    for what, text in texts.items():
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{what} shows a secret ({len(leaked)} of them):\n{text}"
        assert "Traceback" not in text, f"{what} shows a traceback:\n{text}"


# --------------------------------------------------------------------------- helpers

def pty_env(home, **overrides) -> dict:
    """A run's environment for a terminal: no IMGUR_CLIENT_ID etc., TERM set, no browser."""
    env = home.env({"TERM": "xterm", "COLUMNS": "100", "BROWSER": "true", **overrides})
    return env


class Session:
    """imgurbox in a pseudo-terminal; ``transcript`` is everything the terminal showed."""

    def __init__(self, home, *args, env=None, timeout=20):
        self.home = home
        self.log = io.StringIO()
        command, *argv = home.argv(*args)
        self.child = pexpect.spawn(
            command, argv,
            env=env or pty_env(home), encoding="utf-8", codec_errors="replace",
            timeout=timeout, dimensions=(40, 100))
        self.child.logfile_read = self.log

    @property
    def transcript(self) -> str:
        return self.log.getvalue()

    def expect(self, pattern):
        self.child.expect(pattern)
        return self.child.match

    def answer(self, pattern, text: str, secret: bool = False) -> None:
        """Wait for a prompt, then type ``text`` and Enter (after echo is off if secret)."""
        self.child.expect(pattern)
        if secret:
            assert self.child.waitnoecho(timeout=5), "a secret prompt left echo on"
        self.child.sendline(text)

    def client(self, client_id=CLIENT_ID, secret=CLIENT_SECRET) -> None:
        self.answer(r"client ID: ", client_id)
        self.answer(r"client secret[^:]*: ", secret, secret=True)

    def route(self, choice: str) -> None:
        self.answer(r"Choose 1 or 2[^:]*: ", choice)

    def refresh_token(self, token: str) -> None:
        self.answer(r"Refresh token[^:]*: ", token, secret=True)

    def browser_url(self) -> str:
        return self.expect(AUTHORIZE_URL).group(1)

    def finish(self, timeout=30) -> int:
        self.child.expect(pexpect.EOF, timeout=timeout)
        self.child.close()
        return self.child.exitstatus if self.child.exitstatus is not None \
            else 128 + self.child.signalstatus


def landing_address(url: str) -> str:
    """Follow the authorize page like a browser does, one hop: the callback address."""
    answer = requests.get(url, allow_redirects=False, timeout=10)
    assert answer.status_code in (301, 302, 303, 307), answer.text
    return answer.headers["Location"]


def credentials(home) -> dict:
    return json.loads((home.path / "credentials.json").read_text(encoding="utf-8"))


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def assert_saved_and_valid(home, fake, username="alice") -> dict:
    """credentials.json is 0600 and holds a client, live tokens and the account name."""
    path = home.path / "credentials.json"
    assert mode(path) == 0o600
    saved = credentials(home)
    assert saved["client_id"] == CLIENT_ID and saved["client_secret"] == CLIENT_SECRET
    assert saved["access_token"] in fake._access_tokens
    token = fake._refresh_tokens.get(saved["refresh_token"])
    assert token is not None and not token.revoked and token.username == username
    assert saved.get("account_username") == username
    return saved


def synced_home(home, fake, names=("a.jpg", "b.jpg")):
    """A home with credentials and one folder synced once (albums.txt linked)."""
    home.write_credentials()
    home.folder("Trip", {name: jpeg(i) for i, name in enumerate(names)})
    home.write_albums(f"{home.photos / 'Trip'}\n")
    result = home.run("sync")
    assert result.code == 0, result
    scan(home, fake, result)
    fake.reset_requests()
    return result


# --------------------------------------------------------------------------- auth in a terminal

def test_auth_with_a_refresh_token_in_a_terminal(home, fake):
    pasted = fake.issue_tokens()["refresh_token"]
    session = Session(home, "auth")
    session.client()
    session.route("1")
    session.refresh_token(pasted)
    code = session.finish()
    assert code == 0, session.transcript
    assert "Authorized as alice" in session.transcript
    saved = assert_saved_and_valid(home, fake)
    # The token endpoint's answer is what is kept: a new refresh token, not the pasted one.
    assert saved["refresh_token"] != pasted
    assert len(requests_to(fake, "GET", "/3/account/me")) == 1
    assert len(token_requests(fake)) == 1
    assert CLIENT_SECRET not in session.transcript
    assert pasted not in session.transcript
    scan(home, fake, transcript=session.transcript, extra=[pasted])


def test_auth_by_the_browser_route(home, fake):
    session = Session(home, "auth")
    session.client()
    session.route("2")
    url = session.browser_url()
    assert "response_type=token" in url and f"client_id={CLIENT_ID}" in url
    assert url.startswith(fake.url + "oauth2/authorize?")
    landed = landing_address(url)
    assert "#access_token=" in landed
    session.answer(r"(?i)address[^:]*: ", landed)
    code = session.finish()
    assert code == 0, session.transcript
    assert "Authorized as alice" in session.transcript
    saved = assert_saved_and_valid(home, fake)
    assert saved["access_token"] in landed and saved["refresh_token"] in landed
    assert len(requests_to(fake, "GET", "/3/account/me")) == 1
    assert token_requests(fake) == []           # the tokens came in the fragment
    # The landed address (with the tokens in it) is typed with echo on: only what
    # imgurbox itself prints counts, so check imgurbox's own output lines after it.
    after = session.transcript.split(landed, 1)[-1]
    scan(home, fake, transcript=after)


def test_auth_with_a_pin(home, fake):
    session = Session(home, "auth")
    session.client()
    session.route("2")
    url = session.browser_url().replace("response_type=token", "response_type=pin")
    page = requests.get(url, timeout=10).text
    pin = re.search(r'<code id="pin">(\w+)</code>', page).group(1)
    session.answer(r"(?i)address[^:]*: ", pin)
    code = session.finish()
    assert code == 0, session.transcript
    assert "Authorized as alice" in session.transcript
    assert_saved_and_valid(home, fake)
    grants = [r.value("grant_type") for r in token_requests(fake)]
    assert grants == ["pin"]
    assert len(requests_to(fake, "GET", "/3/account/me")) == 1
    scan(home, fake, transcript=session.transcript.split(pin, 1)[-1])


@pytest.mark.parametrize("paste", [
    "hello, this is not it",
    "http://127.0.0.1/callback",
    "http://127.0.0.1/callback#state=xyz&token_type=bearer",
], ids=["words", "no-fragment", "fragment-without-tokens"])
def test_malformed_paste_is_explained_and_asked_again(home, fake, paste):
    session = Session(home, "auth")
    session.client()
    session.route("2")
    url = session.browser_url()
    session.answer(r"(?i)address[^:]*: ", paste)
    session.expect(r"(?i)error")
    # Another prompt, then a good paste succeeds.
    session.answer(r"(?i)address[^:]*: ", landing_address(url))
    code = session.finish()
    assert code == 0, session.transcript
    message = session.transcript.split(paste, 1)[1].split("\n", 2)[1]
    assert re.search(r"(?i)address|PIN", message), message
    assert "Authorized as alice" in session.transcript
    assert len(requests_to(fake, "GET", "/3/account/me")) == 1
    assert_saved_and_valid(home, fake)


def test_refused_pin_is_explained_and_another_try_given(home, fake):
    session = Session(home, "auth")
    session.client()
    session.route("2")
    session.browser_url()
    session.answer(r"(?i)address[^:]*: ", "0123456789")        # a PIN Imgur never issued
    session.expect(r"(?i)refused")
    # Another try: whatever is asked next, the refresh-token route completes it.
    good = fake.issue_tokens()["refresh_token"]
    index = session.child.expect([r"client ID: ", r"Choose 1 or 2[^:]*: ",
                                  r"(?i)address[^:]*: "])
    if index == 0:
        session.child.sendline(CLIENT_ID)
        session.answer(r"client secret[^:]*: ", CLIENT_SECRET, secret=True)
        session.route("1")
    elif index == 1:
        session.child.sendline("1")
    else:
        session.child.sendline("1")
    session.refresh_token(good)
    code = session.finish()
    assert code == 0, session.transcript
    assert "Authorized as alice" in session.transcript
    assert_saved_and_valid(home, fake)
    scan(home, fake, transcript=session.transcript, extra=[good])


def test_wrong_secret_is_explained_and_another_try_given(home, fake):
    pasted = fake.issue_tokens()["refresh_token"]
    wrong = "not-the-secret-9f8e7d"
    session = Session(home, "auth")
    session.client(secret=wrong)
    session.route("1")
    session.refresh_token(pasted)
    session.expect(r"(?i)client_secret|secret")
    session.client()                                # asked again
    session.route("1")
    session.refresh_token(pasted)
    code = session.finish()
    assert code == 0, session.transcript
    assert "Authorized as alice" in session.transcript
    assert "Traceback" not in session.transcript
    before_retry = session.transcript.split("Authorized as", 1)[0]
    assert re.search(r"(?i)(refused|invalid|wrong)", before_retry), before_retry
    assert_saved_and_valid(home, fake)
    assert len(requests_to(fake, "GET", "/3/account/me")) == 1
    scan(home, fake, transcript=session.transcript, extra=[wrong, pasted])


def test_authorize_error_page_points_to_the_refresh_token_route(home, fake):
    fake.authorize_error = True
    session = Session(home, "auth")
    session.client()
    session.route("2")
    url = session.browser_url()
    page = requests.get(url, allow_redirects=False, timeout=10)
    assert page.status_code == 403 and "Error 1024" in page.text
    text = re.sub(r"<[^>]+>", " ", page.text.split("<body>", 1)[1])
    text = " ".join(text.split())                   # what a person copies off the page
    session.answer(r"(?i)address[^:]*: ", text)
    session.expect(r"(?i)address[^:]*: ")           # another try is offered ...
    explained = session.transcript.split(text, 1)[1]
    assert re.search(r"(?i)refresh.token", explained), explained
    # ... and the refresh-token route can be taken from there.
    session.child.sendline("1")
    session.refresh_token(fake.issue_tokens()["refresh_token"])
    code = session.finish()
    assert code == 0, session.transcript
    assert "Authorized as alice" in session.transcript
    assert_saved_and_valid(home, fake)
    scan(home, fake, transcript=session.transcript)


def test_end_of_input_at_a_prompt_stops_auth(home, fake):
    session = Session(home, "auth")
    session.client()
    session.route("2")
    session.browser_url()
    session.expect(r"(?i)address[^:]*: ")
    session.child.sendeof()
    code = session.finish(timeout=10)
    assert code == 5, session.transcript
    assert not (home.path / "credentials.json").exists()
    scan(home, fake, transcript=session.transcript)


def test_auth_keeps_client_from_the_environment_and_asks_only_for_the_token(home, fake):
    env = pty_env(home, IMGUR_CLIENT_ID=CLIENT_ID, IMGUR_CLIENT_SECRET=CLIENT_SECRET)
    session = Session(home, "auth", env=env)
    session.route("1")
    session.refresh_token(fake.issue_tokens()["refresh_token"])
    code = session.finish()
    assert code == 0, session.transcript
    assert "client ID" not in session.transcript
    assert_saved_and_valid(home, fake)
    scan(home, fake, transcript=session.transcript)


# --------------------------------------------------------------------------- auth without a terminal

def test_auth_from_the_environment_without_a_terminal(home, fake):
    refresh = fake.issue_tokens()["refresh_token"]
    result = home.run("auth", env={"IMGUR_REFRESH_TOKEN": refresh, "IMGUR_CLIENT_ID": CLIENT_ID,
                                   "IMGUR_CLIENT_SECRET": CLIENT_SECRET}, timeout=30)
    assert result.code == 0, result
    assert "alice" in result.stdout
    assert_saved_and_valid(home, fake)
    assert len(requests_to(fake, "GET", "/3/account/me")) == 1
    scan(home, fake, result, extra=[refresh])


def test_auth_without_a_terminal_or_refresh_token_exits_5_at_once(home, fake):
    # No terminal: it must not wait for input (a wait would hit the 30 s timeout).
    result = home.run("auth", env={"IMGUR_CLIENT_ID": CLIENT_ID,
                                   "IMGUR_CLIENT_SECRET": CLIENT_SECRET}, timeout=30)
    assert result.code == 5, result
    assert "IMGUR_REFRESH_TOKEN" in result.stderr
    assert fake.api_requests() == []
    assert not (home.path / "credentials.json").exists()
    scan(home, fake, result)


def test_auth_without_a_terminal_with_a_revoked_token_exits_5(home, fake):
    refresh = fake.issue_tokens()["refresh_token"]
    fake.revoke_refresh_tokens()
    result = home.run("auth", env={"IMGUR_REFRESH_TOKEN": refresh, "IMGUR_CLIENT_ID": CLIENT_ID,
                                   "IMGUR_CLIENT_SECRET": CLIENT_SECRET}, timeout=30)
    assert result.code == 5, result
    assert result.stderr.strip()
    assert not (home.path / "credentials.json").exists()
    scan(home, fake, result, extra=[refresh])


# --------------------------------------------------------------------------- sync without credentials

def test_sync_without_credentials_or_terminal_exits_5_naming_auth(home, fake):
    home.folder("Trip", {"a.jpg": jpeg(1)})
    home.write_albums(f"{home.photos / 'Trip'}\n")
    before = home.albums_bytes()
    result = home.run("sync", timeout=30)          # a wait for input would time out
    assert result.code == 5, result
    assert "auth" in result.stderr
    assert fake.api_requests() == []
    assert home.albums_bytes() == before
    assert home.state() is None or not home.state().get("pending")
    scan(home, fake, result)


def test_sync_without_credentials_in_a_terminal_offers_auth_then_syncs(home, fake):
    home.folder("Trip", {"a.jpg": jpeg(1)})
    home.write_albums(f"{home.photos / 'Trip'}\n")
    session = Session(home, "sync")
    session.answer(r"(?i)auth.*\?[^\n]*", "y")
    session.client()
    session.route("1")
    session.refresh_token(fake.issue_tokens()["refresh_token"])
    # Someone is there: the plan's summary, and a question before anything is uploaded.
    session.expect(r"This sync would upload 1 file into 1 new album: 12 credits\.")
    session.answer(r"Sync now\? \[Y/n, or d to see every action first\] ", "")
    code = session.finish()
    assert code == 0, session.transcript
    assert "Authorized as alice" in session.transcript
    assert "+ upload" in session.transcript
    assert len(done_uploads(fake)) == 1
    assert_saved_and_valid(home, fake)
    scan(home, fake, transcript=session.transcript)


def test_after_an_offered_auth_the_plan_can_be_seen_or_the_sync_declined(home, fake):
    folder = home.folder("Trip", {"a.jpg": jpeg(1), "b.jpg": jpeg(2)})
    home.write_albums(f"{folder}\n")
    session = Session(home, "sync")
    session.answer(r"(?i)auth.*\?[^\n]*", "y")
    session.client()
    session.route("1")
    session.refresh_token(fake.issue_tokens()["refresh_token"])
    session.answer(r"Sync now\?[^\n]*\] ", "d")                # the dry run's lines
    session.expect(r"\+ upload Trip/a\.jpg")
    session.expect(r"plan: 4 requests, 22 credits")
    session.answer(r"Sync now\?[^\n]*\] ", "n")
    session.expect(r"nothing was changed; see every action first with `[^`]+ --dry-run`")
    code = session.finish()
    assert code == 0, session.transcript
    assert [r for r in fake.api_requests() if r.method != "GET"
            and not r.path.startswith("/oauth2/")] == [], fake.api_requests()
    assert (home.path / "credentials.json").exists()          # the auth itself is kept
    assert home.state() is None
    scan(home, fake, transcript=session.transcript)


def test_sync_without_credentials_in_a_terminal_declined_exits_5(home, fake):
    home.folder("Trip", {"a.jpg": jpeg(1)})
    home.write_albums(f"{home.photos / 'Trip'}\n")
    session = Session(home, "sync")
    session.answer(r"(?i)auth.*\?[^\n]*", "n")
    code = session.finish()
    assert code == 5, session.transcript
    assert "auth" in session.transcript.split("\n", 1)[-1]
    assert fake.api_requests() == []
    scan(home, fake, transcript=session.transcript)


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe garbage"],
                         ids=["broken", "not-an-object", "not-utf8"])
def test_unparseable_credentials_exit_2(home, fake, content):
    home.folder("Trip", {"a.jpg": jpeg(1)})
    home.write_albums(f"{home.photos / 'Trip'}\n")
    before = home.albums_bytes()
    path = home.path / "credentials.json"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    result = home.run("sync", timeout=30)
    assert result.code == 2, result
    assert "credentials.json" in result.stderr
    assert fake.api_requests() == []
    assert home.albums_bytes() == before
    assert path.read_bytes() == content
    scan(home, fake, result)


# --------------------------------------------------------------------------- tokens during a sync

def test_expired_token_is_refreshed_once_and_everything_saved(home, fake):
    synced_home(home, fake)
    old = credentials(home)
    fake.expire_access_tokens()
    (home.photos / "Trip" / "c.jpg").write_bytes(jpeg(3))
    result = home.run("sync")
    assert result.code == 0, result
    assert len(token_requests(fake)) == 1
    assert len(done_uploads(fake)) == 1
    saved = assert_saved_and_valid(home, fake)
    assert saved["access_token"] != old["access_token"]
    assert saved["refresh_token"] != old["refresh_token"]     # the NEW refresh token
    scan(home, fake, result)
    # The old refresh token may stop working: the saved one is the one used next time.
    fake._refresh_tokens[old["refresh_token"]].revoked = True
    fake.expire_access_tokens()
    fake.reset_requests()
    (home.photos / "Trip" / "d.jpg").write_bytes(jpeg(4))
    result = home.run("sync")
    assert result.code == 0, result
    assert len(token_requests(fake)) == 1 and len(done_uploads(fake)) == 1
    assert_saved_and_valid(home, fake)
    scan(home, fake, result)


def test_token_expiring_in_the_middle_of_a_sync(home, fake):
    synced_home(home, fake)
    old = credentials(home)
    for i in range(4):
        (home.photos / "Trip" / f"n{i}.jpg").write_bytes(jpeg(10 + i))
    done = []

    def expire_after_first_upload(phase, request):
        if phase == "after" and request.path == "/3/image" and not done:
            done.append(request)
            fake.expire_access_tokens()
    fake.on_request = expire_after_first_upload
    result = home.run("sync", "--jobs", "1")
    fake.on_request = None
    assert result.code == 0, result
    assert len(token_requests(fake)) == 1
    assert len(done_uploads(fake)) == 4
    saved = assert_saved_and_valid(home, fake)
    assert saved["refresh_token"] != old["refresh_token"]
    assert mode(home.path / "credentials.json") == 0o600
    scan(home, fake, result)


def test_expired_token_with_parallel_uploads_refreshes_once(home, fake):
    synced_home(home, fake)
    for i in range(8):
        (home.photos / "Trip" / f"n{i}.jpg").write_bytes(jpeg(20 + i))
    fake.expire_access_tokens()
    fake.latency = 0.05
    result = home.run("sync", "--jobs", "4")
    assert result.code == 0, result
    assert len(token_requests(fake)) == 1
    assert len(done_uploads(fake)) == 8
    assert_saved_and_valid(home, fake)
    scan(home, fake, result)


def test_revoked_refresh_token_exits_5_and_changes_nothing(home, fake):
    synced_home(home, fake)
    (home.photos / "Trip" / "c.jpg").write_bytes(jpeg(3))
    (home.photos / "Trip" / "a.jpg").unlink()
    state_before = home.state()
    albums_before = home.albums_bytes()
    creds_before = (home.path / "credentials.json").read_bytes()
    images_before = set(fake.images)
    fake.expire_access_tokens()
    fake.revoke_refresh_tokens()
    result = home.run("sync")
    assert result.code == 5, result
    assert "auth" in result.stderr
    assert len(token_requests(fake)) == 1
    assert done_uploads(fake) == []
    assert set(fake.images) == images_before
    after = home.state()
    # Local bookkeeping (scan time, generation) may move; what is synced and pending may not.
    for key in ("albums", "pending", "refused"):
        assert after.get(key) == state_before.get(key), key
    assert home.albums_bytes() == albums_before
    assert (home.path / "credentials.json").read_bytes() == creds_before
    scan(home, fake, result)


def test_revoked_refresh_token_with_parallel_uploads_stops_at_the_first_refusal(home, fake):
    synced_home(home, fake)
    for i in range(6):
        (home.photos / "Trip" / f"n{i}.jpg").write_bytes(jpeg(30 + i))
    state_before = home.state()
    fake.expire_access_tokens()
    fake.revoke_refresh_tokens()
    fake.latency = 0.05
    result = home.run("sync", "--jobs", "4")
    assert result.code == 5, result
    assert done_uploads(fake) == []
    assert len(token_requests(fake)) == 1
    after = home.state()
    for key in ("albums", "pending"):
        assert after.get(key) == state_before.get(key), key
    scan(home, fake, result)


def test_revoked_refresh_token_on_a_first_sync_exits_5(home, fake):
    home.write_credentials()
    home.folder("Trip", {"a.jpg": jpeg(1)})
    home.write_albums(f"{home.photos / 'Trip'}\n")
    albums_before = home.albums_bytes()
    fake.expire_access_tokens()
    fake.revoke_refresh_tokens()
    result = home.run("sync")
    assert result.code == 5, result
    assert "auth" in result.stderr
    assert fake.albums == {} and fake.images == {}
    assert home.albums_bytes() == albums_before
    scan(home, fake, result)


@pytest.mark.parametrize("html", [False, True], ids=["json", "html"])
def test_over_capacity_403_never_refreshes(home, fake, html):
    synced_home(home, fake)
    (home.photos / "Trip" / "c.jpg").write_bytes(jpeg(3))
    fake.add_fault("over_capacity", method="POST", path=r"^/3/image$", count=2, html=html)
    result = home.run("sync")
    assert result.code == 0, result
    assert token_requests(fake) == []
    assert len(done_uploads(fake)) == 1
    scan(home, fake, result)


def test_over_capacity_for_good_fails_without_refresh(home, fake):
    synced_home(home, fake)
    (home.photos / "Trip" / "c.jpg").write_bytes(jpeg(3))
    fake.add_fault("over_capacity", method="POST", path=r"^/3/image$", count=None)
    result = home.run("sync")
    assert result.code == 1, result
    assert token_requests(fake) == []
    scan(home, fake, result)


def test_server_errors_never_refresh(home, fake):
    synced_home(home, fake)
    (home.photos / "Trip" / "a.jpg").unlink()
    fake.add_fault("status", method="DELETE", code=502, count=2)
    result = home.run("sync")
    assert result.code == 0, result
    assert token_requests(fake) == []
    scan(home, fake, result)


def test_still_refused_after_a_good_refresh_fails_the_item_without_a_second_refresh(home, fake):
    synced_home(home, fake)
    (home.photos / "Trip" / "c.jpg").write_bytes(jpeg(3))
    fake.add_fault("token_expired", method="POST", path=r"^/3/image$", count=2)
    result = home.run("sync")
    assert result.code == 1, result
    assert len(token_requests(fake)) == 1
    assert "c.jpg" in result.stdout + result.stderr
    assert_saved_and_valid(home, fake)
    scan(home, fake, result)


@pytest.mark.parametrize("loose", [0o640, 0o644, 0o604], ids=["group", "world", "other-only"])
def test_readable_credentials_get_a_warning_and_0600(home, fake, loose):
    home.write_credentials()
    os.chmod(home.path / "credentials.json", loose)
    home.folder("Trip", {"a.jpg": jpeg(1)})
    home.write_albums(f"{home.photos / 'Trip'}\n")
    result = home.run("sync")
    assert result.code == 0, result
    assert re.search(r"(?i)warning.*credentials\.json", result.stderr), result.stderr
    assert mode(home.path / "credentials.json") == 0o600
    scan(home, fake, result)


def test_dry_run_warns_of_readable_credentials_but_changes_nothing(home, fake):
    home.write_credentials()
    os.chmod(home.path / "credentials.json", 0o644)
    home.folder("Trip", {"a.jpg": jpeg(1)})
    home.write_albums(f"{home.photos / 'Trip'}\n")
    result = home.run("sync", "--dry-run")
    assert result.code == 0, result
    assert re.search(r"(?i)warning.*credentials\.json", result.stderr), result.stderr
    assert mode(home.path / "credentials.json") == 0o644      # not saved: no write
    scan(home, fake, result)


def test_log_records_operations_but_no_secret(home, fake):
    synced_home(home, fake)
    fake.expire_access_tokens()
    (home.photos / "Trip" / "c.jpg").write_bytes(jpeg(3))
    result = home.run("sync", "-v")
    assert result.code == 0, result
    log = (home.path / "log.txt").read_text(encoding="utf-8")
    assert "refresh" in log
    scan(home, fake, result)


def test_credentials_without_an_access_token_refresh_before_uploading(home, fake):
    """A credentials.json brought by hand may hold only the refresh token: imgurbox must
    get a user token first, or a Client-ID upload would land outside every album."""
    creds = fake.credentials()
    del creds["access_token"]
    home.write_credentials(creds)
    home.folder("Trip", {"a.jpg": jpeg(1), "b.jpg": jpeg(2)})
    home.write_albums(f"{home.photos / 'Trip'}\n")
    result = home.run("sync", "--jobs", "4")
    assert result.code == 0, result
    assert len(token_requests(fake)) == 1
    assert all(r.auth == "bearer" for r in fake.api_requests() if r.path.startswith("/3/"))
    saved = json.loads((home.path / "credentials.json").read_text())
    assert saved.get("access_token")
    (album_id,) = fake.albums
    assert sorted(fake.images[i].name for i in fake.album_image_ids(album_id)) == ["a.jpg", "b.jpg"]
    scan(home, fake, result)
