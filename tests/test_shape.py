"""The shape the README's "Development" section promises, checked on the source itself:
every remote write goes through Remote, a dry run's RemoteReader has no write method,
and the executor never reaches past Remote into Api or the imgurpython client."""

import ast

from conftest import IMGURBOX, import_imgurbox

# The imgurpython client methods that change something on Imgur.
CLIENT_WRITES = {'create_album', 'update_album', 'album_add_images',
                 'album_remove_images', 'delete_image', 'upload_file', 'album_write'}
REMOTE_WRITES = {'create_album', 'make_hidden', 'retitle_album', 'add_images',
                 'remove_images', 'delete_image', 'update_image', 'download',
                 'begin_upload', 'upload', 'commit_pending'}


def classes():
    tree = ast.parse(IMGURBOX.read_text(encoding='utf-8'))
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            found.setdefault(node.name, node)
    return tree, found


def calls_in(node):
    return [n for n in ast.walk(node) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)]


def receiver(call) -> str:
    """The name a method is called on: `client` for self.client.x() and client.x()."""
    value = call.func.value
    return value.attr if isinstance(value, ast.Attribute) else getattr(value, 'id', '')


def test_a_dry_runs_reader_has_no_write_method_and_remote_has_them_all():
    imgurbox = import_imgurbox()
    assert not REMOTE_WRITES & set(dir(imgurbox.RemoteReader))
    assert REMOTE_WRITES <= set(dir(imgurbox.Remote))


def test_client_writes_are_called_only_inside_remote():
    tree, found = classes()
    allowed = set(map(id, ast.walk(found['Remote']))) | set(map(id, ast.walk(found['make_client'])))
    outside = [(call.func.attr, call.lineno) for call in calls_in(tree)
               if call.func.attr in CLIENT_WRITES and receiver(call) != 'remote'
               and id(call) not in allowed]
    assert outside == []


def test_only_api_and_the_client_send_requests_that_write():
    tree, found = classes()
    allowed = set(map(id, ast.walk(found['Api']))) | set(map(id, ast.walk(found['make_client'])))
    requests = [call for call in calls_in(tree)
                if call.func.attr == 'request' and id(call) not in allowed]
    # `auth` checks its new tokens with one GET of its own, before any Remote exists.
    assert all(call.args[0].value == 'GET' for call in requests)
    # make_request with a method other than GET: only in Remote.
    remote = set(map(id, ast.walk(found['Remote'])))
    writes = [call.lineno for call in calls_in(tree) if call.func.attr == 'make_request'
              and call.args and isinstance(call.args[0], ast.Constant)
              and call.args[0].value != 'GET' and id(call) not in remote]
    assert writes == []


def test_the_executor_reaches_imgur_only_through_its_remote():
    _, found = classes()
    executor = found['Executor']
    touched = {node.attr for node in ast.walk(executor) if isinstance(node, ast.Attribute)
               and isinstance(node.value, ast.Attribute) is False
               and isinstance(node.value, ast.Name) and node.value.id == 'self'}
    assert 'api' not in touched and 'client' not in touched
    assert 'remote' in touched


def test_a_signal_is_no_error_that_a_handler_of_errors_could_swallow():
    # watch looked at albums.txt between syncs under `except (ImgurboxError, ...)`, and a
    # SIGTERM that came just then was swallowed: watch kept running. A signal's exception
    # must pass every handler of imgurbox's errors, as KeyboardInterrupt does.
    ib = import_imgurbox()
    assert not issubclass(ib.Interrupted, Exception)
    tree, _ = classes()
    broad = [handler.lineno for handler in ast.walk(tree)
             if isinstance(handler, ast.ExceptHandler) and isinstance(handler.type, ast.Name)
             and handler.type.id == 'BaseException' and not any(
                 isinstance(n, ast.Raise) for n in ast.walk(handler))
             and not _hands_over(handler)]
    assert broad == [], f'except BaseException that neither re-raises nor hands over: {broad}'


def _hands_over(handler) -> bool:
    """A worker thread's `except BaseException as e: result = e` hands the exception to
    the main thread, which raises it there."""
    return handler.name is not None and any(
        isinstance(n, ast.Assign) and isinstance(n.value, ast.Name) and n.value.id == handler.name
        for n in ast.walk(handler))
