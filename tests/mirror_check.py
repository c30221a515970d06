"""Checks shared by the reliability, kill-point and scale tests: is the fake Imgur an
exact mirror of the local folders, with nothing lost, nothing twice, no orphan?

Used by the end-to-end test files; also the shared ways of counting the fake's requests.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".apng", ".gif", ".tif", ".tiff", ".bmp"}
ID = r"[A-Za-z0-9]+"
LINK = re.compile(r"-> https://imgur\.com/a/([A-Za-z0-9]+)")   # a linked albums.txt line


def field(record, name):
    """A field of a fake album/image record (dict or object)."""
    if isinstance(record, dict):
        return record.get(name)
    return getattr(record, name, None)


def eligible_files(folder: Path) -> list[str]:
    """Names of the files imgurbox syncs in ``folder`` (top level, not hidden, images)."""
    return sorted(p.name for p in Path(folder).iterdir()
                  if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_SUFFIXES)


def load_state(home) -> dict:
    """state.json parsed (it must exist and be valid JSON)."""
    path = Path(home.path) / "state.json"
    assert path.exists(), "no state.json"
    return json.loads(path.read_text(encoding="utf-8"))


def album_of(state: dict, folder: Path) -> str:
    """The album ID the state records for ``folder`` (exactly one)."""
    ids = [album_id for album_id, album in state["albums"].items()
           if Path(album["folder"]) == Path(folder)]
    assert len(ids) == 1, f"{folder} is recorded for {len(ids)} albums: {ids}"
    return ids[0]


def state_files(state: dict, album_id: str) -> dict:
    """file name -> image ID recorded in the state for one album."""
    fields = state.get("file_fields") or ["name", "image_id"]
    name_at, id_at = fields.index("name"), fields.index("image_id")
    return {row[name_at]: row[id_at] for row in state["albums"][album_id]["files"]}


def assert_mirror(home, fake, folders, owner: str = "alice", allowed_extra: int = 0) -> dict:
    """Every eligible local file is in its folder's album exactly once, with its bytes;
    the state records that image for it; the account holds no image that no file maps
    to and no album besides those of ``folders``. Returns folder -> album ID.

    ``allowed_extra``: images SPEC §6 says are reported and left alone (several
    candidates for one pending upload); they must then be recorded as ignored.
    """
    state = load_state(home)
    albums = {}
    mapped = set()
    for folder in folders:
        folder = Path(folder)
        album_id = album_of(state, folder)
        albums[folder] = album_id
        assert album_id in fake.albums, f"album {album_id} of {folder.name} is not on the fake"
        ids = fake.album_image_ids(album_id)
        names = Counter(fake.images[i].name for i in ids)
        twice = sorted(name for name, n in names.items() if n > 1)
        assert not twice, f"{folder.name}: in album {album_id} more than once: {twice}"
        expected = eligible_files(folder)
        assert sorted(names) == expected, (
            f"{folder.name}: album holds {sorted(names)}, folder holds {expected}")
        recorded = state_files(state, album_id)
        for image_id in ids:
            image = fake.images[image_id]
            assert recorded.get(image.name) == image_id, (
                f"{folder.name}/{image.name}: state says {recorded.get(image.name)}, "
                f"album holds {image_id}")
            assert fake.image_bytes(image_id) == (folder / image.name).read_bytes(), (
                f"{folder.name}/{image.name}: the fake holds other bytes (an old version?)")
            mapped.add(image_id)
    own_images = {i for i, image in fake.images.items() if image.owner == owner}
    orphans = own_images - mapped
    assert len(orphans) <= allowed_extra, (
        f"orphan images (no file maps to them): "
        f"{sorted((i, fake.images[i].name) for i in orphans)}")
    if orphans:
        ignored = {i for album in state["albums"].values() for i in album.get("ignored", [])}
        assert orphans <= ignored, f"unreported extra images: {sorted(orphans - ignored)}"
    own_albums = {a for a, album in fake.albums.items() if album.owner == owner}
    extra_albums = own_albums - set(albums.values())
    assert not extra_albums, f"albums that no folder maps to: {sorted(extra_albums)}"
    return albums


def route(request) -> str:
    """'METHOD /3/album/{id}/add' style name of a logged request, IDs replaced."""
    path = request.path
    path = re.sub(rf"^/3/image/{ID}$", "/3/image/{id}", path)
    path = re.sub(rf"^/3/album/{ID}(?=/|$)", "/3/album/{id}", path)
    path = re.sub(r"^/3/account/me/albums/\d+$", "/3/account/me/albums/{page}", path)
    return f"{request.method} {path}"


def kind(request) -> str:
    """A short, method-independent label of a logged API request."""
    name = route(request)
    path = name.split(" ", 1)[1]
    if path in ("/3/image", "/3/upload"):
        return "upload"
    if path == "/3/album" and request.method == "POST":
        return "create"
    if path.endswith("/add"):
        return "add"
    if path.endswith("/remove_images"):
        return "remove"
    if path == "/3/image/{id}" and request.method == "DELETE":
        return "delete"
    if path.startswith("/oauth2/"):
        return "token"
    return name.replace(" ", "_")


def uploads(fake) -> list:
    """The upload requests the fake received (POST /3/image or /3/upload)."""
    return [r for r in fake.api_requests() if r.method == "POST"
            and r.path.rstrip("/") in ("/3/image", "/3/upload")]


def routes(fake) -> Counter:
    """How many API requests of each 'METHOD /3/album/{id}/...' route the fake received."""
    out = Counter()
    for r in fake.api_requests():
        path = re.sub(rf"^/3/(image|album)/{ID}", r"/3/\1/{id}", r.path.rstrip("/"))
        out[f"{r.method} {path}"] += 1
    return out
