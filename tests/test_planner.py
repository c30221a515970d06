"""Table tests of the planner: albums.txt lines + state + scans -> actions.

No filesystem and no network: the planner is a pure function (README "Development"), so each
case builds the state and the scans in memory and compares a compact rendering of the plan.
"""

import pytest

from conftest import import_imgurbox

ib = import_imgurbox()


def make_state(albums: dict) -> "ib.StateStore":
    """albums: album ID -> (folder, {name: content}); image IDs are 'i-<album>-<name>'."""
    state = ib.StateStore("/nonexistent-home", writable=False)
    for album_id, (folder, files) in albums.items():
        state.albums[album_id] = ib.AlbumState(album_id, folder, title=folder.strip("/"), files={
            name: ib.FileRecord("i-%s-%s" % (album_id, name), content, 1, 1, 1)
            for name, content in files.items()})
    return state


def make_scan(folder: str, files: dict | None) -> "ib.FolderScan":
    """files: {name: content} (content None: unreadable); None: the folder is missing."""
    if files is None:
        return ib.FolderScan(folder, error="folder not found")
    scan = ib.FolderScan(folder)
    for name, content in files.items():
        scan.files[name] = ib.ScannedFile(name, folder + "/" + name, 1, 1, 1, content)
        if content is None:
            scan.unreadable.append((name, "denied"))
    return scan


def path_line(number: int, folder: str) -> "ib.AlbumLine":
    return ib.AlbumLine(number, "path", folder, folder, folder)


def link_line(number: int, folder: str, album_id: str) -> "ib.AlbumLine":
    return ib.AlbumLine(number, "link", folder, folder, folder, album_id)


def render(action) -> tuple:
    """A plan action as a short tuple that a table can spell out."""
    if isinstance(action, ib.Upload):
        return ("replace" if action.replaces else "upload", action.album, action.file.name)
    if isinstance(action, ib.Delete):
        return ("delete", action.album, action.name)
    if isinstance(action, ib.Rename):
        return ("rename", action.album, action.old_name, action.file.name)
    if isinstance(action, ib.Move):
        return ("move", action.source, action.album,
                tuple((i.old_name, i.file.name) for i in action.items))
    if isinstance(action, ib.CreateAlbum):
        return ("create", action.folder)
    if isinstance(action, ib.RetitleAlbum):
        return ("retitle", action.album, action.title)
    if isinstance(action, ib.PurgeReplaced):
        return ("purge", action.album, action.image_id)
    if isinstance(action, ib.Repair):
        return ("repair", action.album, action.name)
    if isinstance(action, ib.Download):
        return ("download", action.album, action.image.image_id)
    if isinstance(action, ib.Adopt):
        return ("adopt", action.album, action.file.name, action.image_id)
    if isinstance(action, ib.LinkAlbum):
        return ("link", action.album)
    raise AssertionError("unexpected action %r" % action)


def plan(lines, albums, scans, remote=None, **options):
    state = make_state(albums)
    scan_map = {folder: make_scan(folder, files) for folder, files in scans.items()}
    targets = ib.settle_targets(lines, state, scan_map, key_of=lambda path: path)
    result = ib.plan_sync(targets, scan_map, state, remote or {}, ib.PlanOptions(**options))
    return result, [render(a) for a in result.actions]


A, B = "/A", "/B"
TWO_LINES = [path_line(1, A), path_line(2, B)]

# (case, state albums, scans, expected actions in execution order)
SYNC_TABLE = [
    ("new file is uploaded",
     {"a1": (A, {"x.jpg": "h1"})}, {A: {"x.jpg": "h1", "y.jpg": "h2"}},
     [("upload", "a1", "y.jpg")]),
    ("deleted file is deleted",
     {"a1": (A, {"x.jpg": "h1", "y.jpg": "h2"})}, {A: {"x.jpg": "h1"}},
     [("delete", "a1", "y.jpg")]),
    ("rename within a folder costs nothing",
     {"a1": (A, {"x.jpg": "h1"})}, {A: {"z.jpg": "h1"}},
     [("rename", "a1", "x.jpg", "z.jpg")]),
    ("changed content is replaced",
     {"a1": (A, {"x.jpg": "h1"})}, {A: {"x.jpg": "h9"}},
     [("replace", "a1", "x.jpg")]),
    ("swapped names are two renames",
     {"a1": (A, {"a.jpg": "h1", "b.jpg": "h2"})}, {A: {"a.jpg": "h2", "b.jpg": "h1"}},
     [("rename", "a1", "b.jpg", "a.jpg"), ("rename", "a1", "a.jpg", "b.jpg")]),
    ("uploads start in file-name order",
     {"a1": (A, {})}, {A: {"c.jpg": "h3", "a.jpg": "h1", "b.jpg": "h2"}},
     [("upload", "a1", "a.jpg"), ("upload", "a1", "b.jpg"), ("upload", "a1", "c.jpg")]),
]

TWO_FOLDER_TABLE = [
    ("move to another synced folder",
     {"a1": (A, {"x.jpg": "h1"}), "b1": (B, {})}, {A: {}, B: {"x.jpg": "h1"}},
     [("move", "a1", "b1", (("x.jpg", "x.jpg"),))]),
    ("several moves between one pair of albums are one move",
     {"a1": (A, {"x.jpg": "h1", "y.jpg": "h2", "z.jpg": "h3", "k.jpg": "h4"}), "b1": (B, {})},
     {A: {"k.jpg": "h4"}, B: {"x.jpg": "h1", "y2.jpg": "h2", "z.jpg": "h3"}},
     [("move", "a1", "b1", (("x.jpg", "x.jpg"), ("y.jpg", "y2.jpg"), ("z.jpg", "z.jpg")))]),
    ("same name, other content, in another folder: upload and delete, never a move",
     {"a1": (A, {"x.jpg": "h1", "k.jpg": "h3"}), "b1": (B, {})},
     {A: {"k.jpg": "h3"}, B: {"x.jpg": "h2"}},
     [("upload", "b1", "x.jpg"), ("delete", "a1", "x.jpg")]),
    ("identical bytes in two folders are two images",
     {"a1": (A, {}), "b1": (B, {})}, {A: {"x.jpg": "h1"}, B: {"x.jpg": "h1"}},
     [("upload", "a1", "x.jpg"), ("upload", "b1", "x.jpg")]),
    ("a rename in the same folder wins over a move",
     {"a1": (A, {"x.jpg": "h1"}), "b1": (B, {})}, {A: {"y.jpg": "h1"}, B: {"x.jpg": "h1"}},
     [("rename", "a1", "x.jpg", "y.jpg"), ("upload", "b1", "x.jpg")]),
    ("two copies vanish, two appear elsewhere: pairs in sorted path order",
     {"a1": (A, {"p.jpg": "h1", "q.jpg": "h1"}), "b1": (B, {})},
     {A: {}, B: {"r.jpg": "h1", "s.jpg": "h1"}},
     [("move", "a1", "b1", (("p.jpg", "r.jpg"), ("q.jpg", "s.jpg")))]),
    ("a folder emptied by moving its files out is not unavailable",
     {"a1": (A, {"x.jpg": "h1", "y.jpg": "h2"}), "b1": (B, {})}, {A: {}, B: {"x.jpg": "h1"}},
     [("move", "a1", "b1", (("x.jpg", "x.jpg"),)), ("delete", "a1", "y.jpg")]),
    ("the new content of a replaced name is moved in from elsewhere",
     {"a1": (A, {"x.jpg": "h1"}), "b1": (B, {"y.jpg": "h2"})}, {A: {"x.jpg": "h2"}, B: {}},
     [("move", "b1", "a1", (("y.jpg", "x.jpg"),)), ("delete", "a1", "x.jpg")]),
]


@pytest.mark.parametrize("case, albums, scans, expected", SYNC_TABLE,
                         ids=[row[0] for row in SYNC_TABLE])
def test_one_folder(case, albums, scans, expected):
    _, actions = plan([path_line(1, A)], albums, scans)
    assert actions == expected


@pytest.mark.parametrize("case, albums, scans, expected", TWO_FOLDER_TABLE,
                         ids=[row[0] for row in TWO_FOLDER_TABLE])
def test_two_folders(case, albums, scans, expected):
    _, actions = plan(TWO_LINES, albums, scans)
    assert actions == expected


def test_content_from_an_unlisted_folder_is_uploaded_not_moved():
    result, actions = plan([path_line(2, B)], {"a1": (A, {"x.jpg": "h1"}), "b1": (B, {})},
                           {B: {"x.jpg": "h1"}})
    assert actions == [("upload", "b1", "x.jpg")]


def test_content_from_an_unavailable_folder_is_uploaded_not_moved():
    result, actions = plan(TWO_LINES, {"a1": (A, {"x.jpg": "h1"}), "b1": (B, {})},
                           {A: None, B: {"x.jpg": "h1"}})
    assert actions == [("upload", "b1", "x.jpg")]
    assert [folder for folder, _ in result.errors] == [A]


def test_missing_folder_is_unavailable_and_deletes_nothing():
    result, actions = plan([path_line(1, A)], {"a1": (A, {"x.jpg": "h1"})}, {A: None})
    assert actions == []
    assert len(result.errors) == 1 and "unavailable" in result.errors[0][1]


def test_emptied_folder_is_unavailable_unless_forced():
    albums = {"a1": (A, {"x.jpg": "h1"})}
    result, actions = plan([path_line(1, A)], albums, {A: {}})
    assert actions == [] and "unavailable" in result.errors[0][1]
    result, actions = plan([path_line(1, A)], albums, {A: {}}, force=True)
    assert actions == [("delete", "a1", "x.jpg")] and not result.errors


FOUR = {"a.jpg": "h1", "b.jpg": "h2", "c.jpg": "h3", "d.jpg": "h4"}


@pytest.mark.parametrize("kept, options, held", [
    ({"a.jpg": "h1", "b.jpg": "h2"}, {}, False),                  # half: allowed
    ({"a.jpg": "h1"}, {}, True),                                  # 3 of 4: held
    ({"a.jpg": "h1"}, {"max_delete": 3}, False),
    ({"a.jpg": "h1"}, {"max_delete": 2}, True),
    ({"a.jpg": "h1"}, {"force": True}, False),
])
def test_delete_guard(kept, options, held):
    result, actions = plan([path_line(1, A)], {"a1": (A, FOUR)}, {A: kept}, **options)
    deletes = [a for a in actions if a[0] == "delete"]
    assert bool(result.held) == held
    assert len(deletes) == (0 if held else 4 - len(kept))


def test_delete_guard_ignores_small_albums():
    _, actions = plan([path_line(1, A)], {"a1": (A, {"a.jpg": "h1", "b.jpg": "h2",
                                                      "c.jpg": "h3"})}, {A: {}}, force=False)
    # 3 recorded files, all gone, nothing elsewhere: that is an unavailable folder...
    assert actions == []
    _, actions = plan([path_line(1, A)], {"a1": (A, {"a.jpg": "h1", "b.jpg": "h2",
                                                      "c.jpg": "h3"})}, {A: {"a.jpg": "h1"}})
    # ...but 2 of 3 deleted in an album under 4 files is not guarded.
    assert [a[0] for a in actions] == ["delete", "delete"]


def test_replacements_have_their_own_guard():
    edited = {name: content + "-edited" for name, content in FOUR.items()}
    result, actions = plan([path_line(1, A)], {"a1": (A, FOUR)}, {A: edited})
    assert actions == [] and "replacements" in result.held[0].reason
    result, actions = plan([path_line(1, A)], {"a1": (A, FOUR)}, {A: edited}, max_delete=4)
    assert [a[0] for a in actions] == ["replace"] * 4


def test_unreadable_file_is_neither_deleted_nor_uploaded():
    result, actions = plan([path_line(1, A)], {"a1": (A, {"x.jpg": "h1", "y.jpg": "h2"})},
                           {A: {"x.jpg": None, "z.jpg": "h3"}})
    assert ("upload", "a1", "z.jpg") in actions
    assert not any(a[0] == "delete" for a in actions)     # y.jpg is held: scan had errors
    assert result.held


def test_refused_content_is_not_uploaded_again():
    state_albums = {"a1": (A, {})}
    state = make_state(state_albums)
    state.refused["h7"] = {"name": "bad.jpg", "message": "not an image"}
    scans = {A: make_scan(A, {"bad.jpg": "h7"})}
    targets = ib.settle_targets([path_line(1, A)], state, scans, key_of=lambda p: p)
    result = ib.plan_sync(targets, scans, state, {}, ib.PlanOptions())
    assert result.actions == [] and result.refused == [(A, "bad.jpg")]


def test_new_folder_gets_an_album_then_its_uploads():
    _, actions = plan([path_line(1, A)], {}, {A: {"x.jpg": "h1"}})
    assert actions == [("create", A), ("upload", "new:" + A, "x.jpg")]


def test_takeover_of_an_unlisted_folder_at_90_percent():
    files = {"%d.jpg" % i: "h%d" % i for i in range(10)}
    renamed = dict(files)
    del renamed["9.jpg"]                                           # 9 of 10 still there
    _, actions = plan([path_line(1, B)], {"a1": (A, files)}, {B: renamed})
    assert actions == [("retitle", "a1", "B"), ("delete", "a1", "9.jpg")]


def test_no_takeover_below_90_percent():
    files = {"%d.jpg" % i: "h%d" % i for i in range(10)}
    fewer = {name: content for name, content in files.items() if name < "8"}
    _, actions = plan([path_line(1, B)], {"a1": (A, files)}, {B: fewer})
    assert actions[0] == ("create", B)
    assert sum(1 for a in actions if a[0] == "upload") == 8


def test_link_line_continues_a_known_album_under_a_new_path():
    _, actions = plan([link_line(1, B, "a1")], {"a1": (A, {"x.jpg": "h1"})},
                      {B: {"x.jpg": "h1"}})
    assert actions == [("retitle", "a1", "B")]


def test_stat_only_change_is_no_action():
    result, actions = plan([path_line(1, A)], {"a1": (A, {"x.jpg": "h1"})}, {A: {"x.jpg": "h1"}})
    assert actions == []
    state = make_state({"a1": (A, {"x.jpg": "h1"})})
    scan = make_scan(A, {"x.jpg": "h1"})
    scan.files["x.jpg"] = scan.files["x.jpg"]._replace(mtime_ns=5) if hasattr(
        scan.files["x.jpg"], "_replace") else ib.ScannedFile("x.jpg", A + "/x.jpg", 1, 5, 1, "h1")
    targets = ib.settle_targets([path_line(1, A)], state, {A: scan}, key_of=lambda p: p)
    result = ib.plan_sync(targets, {A: scan}, state, {}, ib.PlanOptions())
    assert result.actions == [] and [f.name for _, f in result.stat_updates] == ["x.jpg"]
    assert not result.needs_remote          # nothing to do and nothing to look up


def test_replaced_images_awaiting_deletion_are_purged_last():
    state = make_state({"a1": (A, {"x.jpg": "h1"})})
    state.albums["a1"].to_delete.append("old1")
    scans = {A: make_scan(A, {"x.jpg": "h1", "y.jpg": "h2"})}
    targets = ib.settle_targets([path_line(1, A)], state, scans, key_of=lambda p: p)
    result = ib.plan_sync(targets, scans, state, {}, ib.PlanOptions())
    assert [render(a) for a in result.actions] == [("upload", "a1", "y.jpg"),
                                                   ("purge", "a1", "old1")]


def remote_album(album_id, images, owned=True):
    return ib.RemoteAlbum(album_id, True, "Title", "alice" if owned else "bob", owned, [
        ib.RemoteImage(image_id, name, "http://x/%s.jpg" % image_id, index, "image/jpeg")
        for index, (image_id, name) in enumerate(images)])


def test_first_link_adopts_by_name_downloads_and_uploads_but_deletes_nothing():
    remote = {"r1": remote_album("r1", [("i1", "same.jpg"), ("i2", "remote.jpg")])}
    result, actions = plan([link_line(1, A, "r1")], {}, {A: {"same.jpg": "h1",
                                                            "local.jpg": "h2"}}, remote)
    assert actions == [("link", "r1"), ("adopt", "r1", "same.jpg", "i1"),
                       ("download", "r1", "i2"), ("upload", "r1", "local.jpg")]


def test_another_accounts_album_is_download_only():
    remote = {"r1": remote_album("r1", [("i2", "remote.jpg")], owned=False)}
    _, actions = plan([link_line(1, A, "r1")], {}, {A: {"local.jpg": "h2"}}, remote)
    assert actions == [("link", "r1"), ("download", "r1", "i2")]


def test_link_line_needs_the_remote_album_first():
    result, actions = plan([link_line(1, A, "r1")], {}, {A: {"x.jpg": "h1"}})
    assert result.needs_remote == {"r1"}   # so the plan is not empty: the album is read


def test_verify_repairs_missing_images_and_downloads_new_ones():
    albums = {"a1": (A, {"x.jpg": "h1", "y.jpg": "h2"})}
    remote = {"a1": ib.RemoteAlbum("a1", True, images=[
        ib.RemoteImage("i-a1-x.jpg", "x.jpg", "http://x/1.jpg", 1, "image/jpeg"),
        ib.RemoteImage("phone1", "IMG_1.jpg", "http://x/2.jpg", 2, "image/jpeg")])}
    _, actions = plan([path_line(1, A)], albums, {A: {"x.jpg": "h1", "y.jpg": "h2"}}, remote,
                      verify=True)
    assert actions == [("download", "a1", "phone1"), ("repair", "a1", "y.jpg")]


def test_verify_without_listing_asks_for_one():
    result, _ = plan([path_line(1, A)], {"a1": (A, {"x.jpg": "h1"})}, {A: {"x.jpg": "h1"}},
                     verify=True)
    assert result.needs_remote == {"a1"}


def _action_classes():
    found, todo = [], [ib.Action]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            found.append(sub)
            todo.append(sub)
    return sorted(found, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", _action_classes(), ids=lambda c: c.__name__)
def test_every_action_kind_says_everything_about_itself(cls):
    """An action class is the one place that describes its kind: a handler on the
    executor, a place in the execution order, the plan's and status's words."""
    # Uploads run in parallel batches, through run_uploads; every other kind one by one.
    handler = "run_uploads" if cls is ib.Upload else "do_" + cls.__name__
    assert callable(getattr(ib.Executor, handler, None)), "no executor handler"
    assert cls.verb and cls.noun and cls.symbol.strip(), "unnamed"
    assert cls.order != ib.Action.order or cls is ib.LinkAlbum, "no place in the order"
    assert cls.label is not None


def test_execution_order_puts_albums_first_and_deletions_last():
    kinds = sorted(_action_classes(), key=lambda c: c.order)
    assert kinds[0] is ib.LinkAlbum and kinds[1] is ib.CreateAlbum
    assert [c.__name__ for c in kinds[-2:]] == ["Delete", "PurgeReplaced"]
    assert ib.Upload.order < ib.Move.order < ib.Delete.order
