"""The suite's one vocabulary for what happened on the fake Imgur (tests/INTERFACES.md,
"Shared test helpers"): is it an exact mirror of the local folders (``assert_mirror``,
``assert_album_mirrors``), what state.json records (``state_files``), and which requests
it received (``kind``, ``route``, ``routes`` and the lists ``uploads``, ``done_uploads``,
``image_deletes``, ``image_updates``, ``delete_requests``, ...). Every test file imports these; none defines
its own.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from fake_imgur import strip_metadata

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


def photos_in(folder) -> dict:
    """The eligible files of ``folder`` (as ``eligible_files``): name -> bytes."""
    return {name: (Path(folder) / name).read_bytes() for name in eligible_files(folder)}


def album_names(fake, album_id: str) -> list:
    """The Imgur names of the images in an album of the fake, sorted."""
    return sorted(fake.images[i].name for i in fake.album_image_ids(album_id))


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
    """file name -> image ID recorded in the state (parsed state.json) for one album."""
    fields = state.get("file_fields") or ["name", "image_id"]
    name_at, id_at = fields.index("name"), fields.index("image_id")
    return {row[name_at]: row[id_at] for row in state["albums"][album_id]["files"]}


def all_state_files(state: dict) -> dict:
    """(album ID, file name) -> image ID recorded in the state, over every album."""
    return {(album_id, name): image_id for album_id in state["albums"]
            for name, image_id in state_files(state, album_id).items()}


# --------------------------------------------------------------------------- mirror checks

def kept_bytes(fake, path: Path, mime: str) -> bytes:
    """A local file's bytes as the fake keeps them once uploaded (without the metadata
    it strips, when ``fake.strip_metadata`` is on, as on Imgur)."""
    data = Path(path).read_bytes()
    return strip_metadata(data, mime) if fake.strip_metadata else data


def assert_album_mirrors(fake, album_id: str, folder) -> list:
    """Album ``album_id`` holds every eligible file of ``folder`` exactly once (by image
    name) and nothing else, each with the file's bytes as the fake keeps them. Checks
    Imgur only (not state.json, not the rest of the account); returns the image IDs."""
    folder = Path(folder)
    ids = fake.album_image_ids(album_id)
    assert len(ids) == len(set(ids)), f"{folder.name}: an image twice in album {album_id}"
    names = Counter(fake.images[i].name for i in ids)
    twice = sorted(name for name, n in names.items() if n > 1)
    assert not twice, f"{folder.name}: in album {album_id} more than once: {twice}"
    expected = eligible_files(folder)
    assert sorted(names) == expected, (
        f"{folder.name}: album holds {sorted(names)}, folder holds {expected}")
    for image_id in ids:
        image = fake.images[image_id]
        assert fake.image_bytes(image_id) == kept_bytes(fake, folder / image.name, image.mime), (
            f"{folder.name}/{image.name}: the fake holds other bytes (an old version?)")
    return ids


def assert_mirror(home, fake, folders, owner: str = "alice", allowed_extra: int = 0,
                  by: str = "names") -> dict:
    """The whole account mirrors ``folders``: every eligible local file is in its
    folder's album exactly once, with its bytes; the state records that image for it;
    the account holds no image that no file maps to and no album besides those of
    ``folders``. Returns folder -> album ID.

    ``by="names"``: the album's images are matched to files by their Imgur names
    (``assert_album_mirrors``). ``by="records"``: by what state.json records instead
    (a rename leaves the image's old name on Imgur): every eligible file recorded once,
    its album holding exactly the recorded images, once each, with the file's bytes.

    ``allowed_extra``: images that are reported and left alone (several candidates
    for one pending upload, README "Reliability"); they must be recorded as ignored.
    """
    assert by in ("names", "records"), by
    state = load_state(home)
    albums = {}
    mapped = set()
    for folder in folders:
        folder = Path(folder)
        album_id = album_of(state, folder)
        albums[folder] = album_id
        assert album_id in fake.albums, f"album {album_id} of {folder.name} is not on the fake"
        recorded = state_files(state, album_id)
        if by == "names":
            ids = assert_album_mirrors(fake, album_id, folder)
            for image_id in ids:
                name = fake.images[image_id].name
                assert recorded.get(name) == image_id, (
                    f"{folder.name}/{name}: state says {recorded.get(name)}, "
                    f"album holds {image_id}")
        else:
            assert sorted(recorded) == eligible_files(folder), (
                f"{folder.name}: state records {sorted(recorded)}, "
                f"folder holds {eligible_files(folder)}")
            ids = fake.album_image_ids(album_id)
            assert len(ids) == len(set(ids)), f"{folder.name}: an image twice in {album_id}"
            assert sorted(ids) == sorted(recorded.values()), (
                f"{folder.name}: album holds {sorted((i, fake.images[i].name) for i in ids)}, "
                f"state records {sorted(recorded.items())}")
            for name, image_id in recorded.items():
                assert fake.image_bytes(image_id) == kept_bytes(
                    fake, folder / name, fake.images[image_id].mime), (
                    f"{folder.name}/{name}: the fake holds other bytes")
        mapped |= set(ids)
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


# --------------------------------------------------------------------------- requests
# One classifier for the fake's request log (fake.requests / fake.api_requests()).

def route(request) -> str:
    """'METHOD /3/album/{id}/add' style name of a logged request, IDs replaced.

    remove_images may be sent as POST or (the older form) DELETE: both are named
    'remove /3/album/{id}/remove_images'.
    """
    path = request.path.split("?")[0].rstrip("/") or "/"
    if path.endswith("/remove_images"):
        return "remove " + re.sub(rf"^/3/album/{ID}", "/3/album/{id}", path)
    path = re.sub(rf"^/3/image/{ID}(?=/|$)", "/3/image/{id}", path)
    path = re.sub(rf"^/3/album/{ID}(?=/|$)", "/3/album/{id}", path)
    path = re.sub(r"^/3/account/me/albums/\d+$", "/3/account/me/albums/{page}", path)
    return f"{request.method} {path}"


def routes(fake) -> Counter:
    """How many API requests of each ``route`` the fake received."""
    return Counter(route(r) for r in fake.api_requests())


def kind(request) -> str:
    """A short label of a logged API request: 'upload' (POST /3/image or /3/upload),
    'create' (POST /3/album), 'add' (POST/PUT /3/album/{id}/add), 'remove'
    (remove_images, either method), 'delete' (DELETE /3/image/{id}), 'token'
    (/oauth2/...); anything else is its ``route`` with '_' for the space."""
    name = route(request)
    method, path = name.split(" ", 1)
    if path in ("/3/image", "/3/upload") and method == "POST":
        return "upload"
    if path == "/3/album" and method == "POST":
        return "create"
    if path == "/3/album/{id}/add" and method in ("POST", "PUT"):
        return "add"
    if method == "remove":
        return "remove"
    if path == "/3/image/{id}" and method == "DELETE":
        return "delete"
    if path.startswith("/oauth2/"):
        return "token"
    return name.replace(" ", "_")


# The words of README's credit table (and of the benchmarks) for the same kinds.
CREDIT_WORDS = {"create": "album creation", "GET_/3/album/{id}": "album read-back",
                "add": "album add", "remove": "album remove"}


def credit_kind(request) -> str:
    """``kind`` in the words of the credit table: 'upload', 'delete', 'album creation',
    'album read-back' (GET /3/album/{id}), 'album add', 'album remove', 'token', ..."""
    label = kind(request)
    return CREDIT_WORDS.get(label, label)


def credit_kinds(fake) -> Counter:
    """API requests per ``credit_kind``, token requests (which cost no credit) left out."""
    return Counter(credit_kind(r) for r in fake.api_requests() if kind(r) != "token")


def of_kind(fake, label: str) -> list:
    """The API requests whose ``kind`` is ``label``, in the order received."""
    return [r for r in fake.api_requests() if kind(r) == label]


def uploads(fake) -> list:
    """Every upload request sent (POST /3/image or /3/upload), whatever its answer."""
    return of_kind(fake, "upload")


def done_uploads(fake) -> list:
    """The uploads the fake performed (answered, or to be answered, 200)."""
    return [r for r in uploads(fake) if r.status == 200]


def image_deletes(fake) -> list:
    """Image deletions sent (DELETE /3/image/{id}), whatever their answer."""
    return of_kind(fake, "delete")


def delete_requests(fake) -> list:
    """Every API request with method DELETE (images, albums, the legacy remove form)."""
    return [r for r in fake.api_requests() if r.method == "DELETE"]


def image_updates(fake) -> list:
    """Image updates sent (POST or PUT /3/image/{id}: a title or description)."""
    return [r for r in fake.api_requests() if r.method in ("POST", "PUT")
            and route(r) == "%s /3/image/{id}" % r.method]


def album_creations(fake) -> list:
    """Album creations sent (POST /3/album)."""
    return of_kind(fake, "create")


def album_adds(fake) -> list:
    """Additions to an album sent (POST or PUT /3/album/{id}/add)."""
    return of_kind(fake, "add")


def album_removes(fake) -> list:
    """Removals from an album sent (/3/album/{id}/remove_images, POST or DELETE)."""
    return of_kind(fake, "remove")


def album_writes(fake) -> list:
    """Every POST, PUT or DELETE under /3/album (create, update, add, remove, delete)."""
    return [r for r in fake.api_requests()
            if r.path.startswith("/3/album") and r.method in ("POST", "PUT", "DELETE")]


def token_requests(fake) -> list:
    """Token requests (/oauth2/token: refreshes and code/PIN exchanges)."""
    return [r for r in fake.api_requests() if r.path.startswith("/oauth2/token")]


def writes(fake) -> list:
    """Every API request that is not a GET, token requests excluded."""
    return [r for r in fake.api_requests()
            if r.method != "GET" and not r.path.startswith("/oauth2/")]


def requests_to(fake, method: str, path: str) -> list:
    """API requests with exactly this method and path (a trailing '/' ignored)."""
    return [r for r in fake.api_requests() if r.method == method and r.path.rstrip("/") == path]


def link_fetches(fake) -> list:
    """Requests for image links (downloads, /i/...), not API calls."""
    return [r for r in fake.requests if r.path.startswith("/i/")]
