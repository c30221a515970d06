"""`imgurbox.py links` (README, "Sharing links"): the links of what is synced, in every
format, from albums.txt and state.json alone: no request, no credentials, no lock, no
write. Names are escaped for their format; the direct link is the one Imgur answered.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from imagefiles import gif, jpeg, png
from mirror_check import load_state, uploads, writes
from test_sync import Synced

HOSTILE = {"a](b).jpg": jpeg(1), "<x>.png": png(2), 'say "cheese".jpg': jpeg(3),
           "[b]bold].gif": gif(4), "plain.jpg": jpeg(5)}
TITLE = 'Trip [2024] "best" <b>&'


def home_files(home) -> dict:
    """Every file in the home, name -> bytes (to compare byte for byte)."""
    return {p.name: p.read_bytes() for p in Path(home.path).iterdir() if p.is_file()}


def links(home, *args):
    """Run `links` with no credentials in the home; assert it wrote nothing there."""
    creds = Path(home.path) / "credentials.json"
    saved = creds.read_bytes() if creds.exists() else None
    if saved is not None:
        creds.unlink()
    before = home_files(home)
    try:
        r = home.run("links", *args)
        assert home_files(home) == before, "links wrote into the home"
    finally:
        if saved is not None:
            creds.write_bytes(saved)
    return r


@pytest.fixture
def shared(home, fake):
    s = Synced(home, fake, {TITLE: HOSTILE})
    s.ids = {name: s.image_id(TITLE, name) for name in HOSTILE}
    s.album = s.albums[TITLE]
    return s


def direct(fake, image_id, ext):
    return f"{fake.url}i/{image_id}.{ext}"


EXT = {"a](b).jpg": "jpg", "<x>.png": "png", 'say "cheese".jpg': "jpg",
       "[b]bold].gif": "gif", "plain.jpg": "jpg"}
ORDER = sorted(HOSTILE)            # name order: '<x>.png', '[b]bold].gif', 'a](b).jpg', ...


def expected_lines(fmt, fake, s) -> list:
    album = f"https://imgur.com/a/{s.album}"
    head = {
        "url": album, "page": album,
        "markdown": "[Trip \\[2024\\] \"best\" \\<b\\>\\&](%s)" % album,
        "html": '<a href="%s">Trip [2024] &quot;best&quot; &lt;b&gt;&amp;</a>' % album,
        "bbcode": '[url=%s]Trip (2024) "best" <b>&[/url]' % album,
        "bbcode-thumb": '[url=%s]Trip (2024) "best" <b>&[/url]' % album,
    }[fmt]
    escaped_md = {"a](b).jpg": "a\\]\\(b\\).jpg", "<x>.png": "\\<x\\>.png",
                  'say "cheese".jpg': 'say "cheese".jpg',
                  "[b]bold].gif": "\\[b\\]bold\\].gif", "plain.jpg": "plain.jpg"}
    escaped_html = {"a](b).jpg": "a](b).jpg", "<x>.png": "&lt;x&gt;.png",
                    'say "cheese".jpg': "say &quot;cheese&quot;.jpg",
                    "[b]bold].gif": "[b]bold].gif", "plain.jpg": "plain.jpg"}
    lines = [head]
    for name in ORDER:
        image_id = s.ids[name]
        link = direct(fake, image_id, EXT[name])
        thumb = f"{fake.url}i/{image_id}m.{EXT[name]}"
        page = f"https://imgur.com/{image_id}"
        lines.append({
            "url": link, "page": page,
            "markdown": f"![{escaped_md[name]}]({link})",
            "html": f'<a href="{page}"><img src="{link}" alt="{escaped_html[name]}"></a>',
            "bbcode": f"[img]{link}[/img]",
            "bbcode-thumb": f"[url={link}][img]{thumb}[/img][/url]",
        }[fmt])
    return lines


@pytest.mark.parametrize("fmt", ["url", "page", "markdown", "html", "bbcode", "bbcode-thumb"])
def test_every_format_on_hostile_names_sends_nothing_and_writes_nothing(shared, fake, fmt):
    r = links(shared.home, "--format", fmt)
    assert r.code == 0, r
    assert fake.api_requests() == [] and fake.requests == []
    assert r.stdout.splitlines() == expected_lines(fmt, fake, shared), r.stdout
    assert r.stderr == "", r.stderr


def test_default_format_is_the_direct_link_imgur_answered(shared, fake):
    r = links(shared.home)
    assert r.code == 0, r
    assert r.stdout.splitlines() == expected_lines("url", fake, shared)
    state = load_state(shared.home)
    fields = state["file_fields"]
    recorded = {row[0]: row[fields.index("link")] for row in state["albums"][shared.album]["files"]}
    assert recorded == {name: direct(fake, shared.ids[name], EXT[name]) for name in HOSTILE}


def test_a_large_png_served_as_jpeg_links_with_jpg(home, fake):
    fake.png_to_jpeg_size = 100                  # every PNG here is "large"
    folder = home.folder("Big", {"big.png": png(9)})
    home.write_credentials()
    home.write_albums(f"{folder}\n")
    assert home.run("sync").code == 0
    (image_id,) = fake.images
    r = links(home)
    assert r.code == 0, r
    assert r.stdout.splitlines()[1] == direct(fake, image_id, "jpg")


def test_a_file_or_folder_named_on_the_command_line(shared, fake):
    folder = shared.dirs[TITLE]
    r = links(shared.home, "--format", "page", str(folder / "plain.jpg"), str(folder / "<x>.png"))
    assert r.code == 0, r
    assert r.stdout.splitlines() == [f"https://imgur.com/a/{shared.album}",
                                     f"https://imgur.com/{shared.ids['<x>.png']}",
                                     f"https://imgur.com/{shared.ids['plain.jpg']}"]
    # relative to the current directory, like any command-line path
    r = links(shared.home, os.path.relpath(folder))
    assert r.code == 0 and r.stdout.splitlines() == expected_lines("url", fake, shared), r


def test_a_path_exactly_as_written_in_albums_txt(home, fake):
    home.folder("Cats", {"felix.jpg": jpeg(1)})
    home.write_credentials()
    home.write_albums("../photos/Cats\n")         # relative to the home, not to the cwd
    assert home.run("sync").code == 0
    (album,) = load_state(home)["albums"]
    r = links(home, "../photos/Cats")
    assert r.code == 0, r
    assert r.stdout.splitlines()[0] == f"https://imgur.com/a/{album}"
    assert len(r.stdout.splitlines()) == 2


def test_not_synced_is_exit_2_and_prints_nothing(shared, fake, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for path in (str(elsewhere), str(shared.dirs[TITLE] / "missing.jpg")):
        r = links(shared.home, path)
        assert r.code == 2, r
        assert r.stdout == "" and path in r.stderr, r


def test_each_path_with_nothing_to_show_is_named_on_a_line_of_its_own(shared, fake, tmp_path):
    paths = [str(tmp_path / "one"), str(shared.dirs[TITLE] / "missing.jpg")]
    r = links(shared.home, *paths)
    assert r.code == 2, r
    lines = r.stderr.splitlines()
    assert "\\n" not in r.stderr, r
    assert [line.split(":")[0].strip() for line in lines[1:]] == paths, r


def test_a_folder_without_an_album_yet(shared, fake):
    new = shared.home.folder("New", {"n.jpg": jpeg(60)})
    shared.home.write_albums(shared.home.albums_bytes().decode() + f"{new}\n")
    r = links(shared.home, str(new))
    assert r.code == 2 and "not synced yet" in r.stderr, r
    r = links(shared.home)                        # all folders: named, not an error
    assert r.code == 0 and str(new) in r.stderr, r
    assert r.stdout.splitlines() == expected_lines("url", fake, shared)


def test_a_file_not_uploaded_yet_is_named_on_stderr(shared, fake):
    (shared.dirs[TITLE] / "later.jpg").write_bytes(jpeg(70))
    r = links(shared.home)
    assert r.code == 0, r
    assert "later.jpg" in r.stderr and "not uploaded yet" in r.stderr
    assert "later.jpg" not in r.stdout
    r = links(shared.home, str(shared.dirs[TITLE] / "later.jpg"))
    assert r.code == 0 and "later.jpg" in r.stderr, r
    assert r.stdout.splitlines() == [f"https://imgur.com/a/{shared.album}"]


def test_entries_recorded_before_links_are_named_and_a_verify_run_records_them(shared, fake):
    path = Path(shared.home.path) / "state.json"
    state = json.loads(path.read_text(encoding="utf-8"))
    at = state["file_fields"].index("link")
    for album in state["albums"].values():
        for row in album["files"]:
            row[at] = ""
    path.write_text(json.dumps(state), encoding="utf-8")
    r = links(shared.home, "--format", "bbcode")
    assert r.code == 0, r
    for name in HOSTILE:
        assert name in r.stderr
    ext = {"jpg": "jpg", "png": "png", "gif": "gif"}
    assert f"[img]https://i.imgur.com/{shared.ids['plain.jpg']}.{ext['jpg']}[/img]" in r.stdout
    assert "--verify" in r.stderr
    r = shared.run("--verify")
    assert r.code == 0, r
    assert uploads(fake) == [] and writes(fake) == []
    r = links(shared.home)
    assert r.code == 0 and r.stderr == "", r
    assert r.stdout.splitlines() == expected_lines("url", fake, shared)


def test_downloaded_and_adopted_images_record_their_links(home, fake):
    album = fake.create_album("alice", title="Linked")
    adopted = fake.create_image("alice", jpeg(1), name="mine.jpg", album=album)
    downloaded = fake.create_image("alice", png(2), name="theirs.png", album=album)
    folder = home.folder("Linked", {"mine.jpg": jpeg(1)})
    home.write_credentials()
    home.write_albums(f"{folder} -> https://imgur.com/a/{album}\n")
    r = home.run("sync")
    assert r.code == 0, r
    r = links(home)
    assert r.code == 0 and r.stderr == "", r
    assert r.stdout.splitlines() == [f"https://imgur.com/a/{album}", direct(fake, adopted, "jpg"),
                                     direct(fake, downloaded, "png")]


def test_a_newline_in_a_name_stays_on_its_line(home, fake):
    s = Synced(home, fake, {"N": {"two\nlines.jpg": jpeg(1)}})
    r = links(home, "--format", "markdown")
    assert r.code == 0, r
    assert r.stdout.splitlines() == [f"[N](https://imgur.com/a/{s.albums['N']})",
                                     f"![two lines.jpg]({direct(fake, s.image_id('N', 'two' + chr(10) + 'lines.jpg'), 'jpg')})"]
