"""Hostile answers from the network (issue "Hostile input, round 2"): redirects that would
carry a secret to another host, answers too big or too slow, answers of the wrong shape,
downloads that never end, and files planted where a download is written. Each runs the
real script against the fake; a second local server stands for "another host"."""

from __future__ import annotations

import http.server
import os
import threading

import pytest

from imagefiles import jpeg
from mirror_check import (album_adds, assert_mirror, done_uploads, load_state, photos_in,
                          requests_to, token_requests, uploads)


class OtherHost:
    """A plain HTTP server on another port, recording everything sent to it."""

    def __init__(self):
        self.received = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self):
                length = int(self.headers.get('Content-Length') or 0)
                owner.received.append((self.command, self.path, dict(self.headers),
                                       self.rfile.read(length)))
                body = b'{"access_token": "portal", "data": {"id": "portal1"}}'
                self.send_response(200)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            do_GET = do_POST = do_PUT = do_DELETE = _record

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = 'http://127.0.0.1:%d/' % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def other_host():
    host = OtherHost()
    yield host
    host.close()


def no_traceback(result):
    assert 'Traceback' not in result.stdout + result.stderr, result


# -- redirects ----------------------------------------------------------------------------

def test_a_token_refresh_redirected_elsewhere_sends_nothing_there_and_is_not_exit_5(
        home, fake, other_host):
    creds = home.write_credentials()
    home.write_albums(f"{home.folder('Cats', {'a.jpg': jpeg(1)})}\n")
    fake.expire_access_tokens()
    fake.add_fault('redirect', path=r'^/oauth2/token$', count=None,
                   location=other_host.url + 'steal')
    r = home.run('sync')
    no_traceback(r)
    assert r.code == 1, r
    assert other_host.received == []
    assert 'redirect' in r.stdout + r.stderr and 'not followed' in r.stdout + r.stderr
    assert creds['refresh_token'] not in r.stdout + r.stderr
    assert uploads(fake) == []
    fake.clear_faults()
    assert home.run('sync').code == 0
    assert_mirror(home, fake, [home.photos / 'Cats'])


def test_an_api_write_redirected_elsewhere_is_never_followed_and_never_doubled(
        home, fake, other_host):
    home.write_credentials()
    folder = home.folder('Cats', {'a.jpg': jpeg(1), 'b.jpg': jpeg(2)})
    home.write_albums(f'{folder}\n')
    fake.add_fault('redirect', method='POST', path=r'^/3/image$', count=None,
                   location=other_host.url + '3/image')
    fake.add_fault('redirect', method='GET', path=r'^/3/album/', count=None,
                   location=other_host.url + '3/album')
    r = home.run('sync')
    no_traceback(r)
    assert r.code == 1, r
    assert other_host.received == [], 'a body or a token went to another host'
    assert done_uploads(fake) == []
    fake.clear_faults()
    r = home.run('sync')
    assert r.code == 0, r
    assert_mirror(home, fake, [folder])
    assert len(done_uploads(fake)) == 2
    # Not marked refused by Imgur: nothing about "refused" in the first run's story.
    assert not load_state(home).get('refused')


# -- answers too big, too slow, or of the wrong shape ----------------------------------------

def test_an_answer_over_the_size_cap_fails_that_request_only(home, fake):
    home.write_credentials()
    folder = home.folder('Cats', {'a.jpg': jpeg(1)})
    home.write_albums(f'{folder}\n')
    assert home.run('sync').code == 0
    fake.add_fault('huge', path=r'^/3/album/[^/]+/images$', count=None, size=64 << 20)
    r = home.run('sync', '--verify')
    no_traceback(r)
    assert r.code == 1, r
    assert 'MiB cap' in r.stdout + r.stderr
    assert (home.path / 'state.json').stat().st_size < 100_000


@pytest.mark.parametrize('part', ['body', 'headers'])
def test_a_dribbling_answer_is_given_up_after_the_read_timeout_and_retried(home, fake, part):
    # 10,000 bytes at one every 0.2 s would take 2,000 s; the read timeout is 2 s here.
    # Each byte comes well within it, so only a deadline over the whole answer (its
    # headers, then its body) stops it, instead of holding the run and its lock.
    album = fake.create_album('alice', title='Trip')
    fake.create_image('alice', jpeg(1), name='a.jpg', album=album)
    home.write_credentials()
    home.write_albums(f'{album}\n')
    fake.add_fault('dribble', path=rf'^/3/album/{album}$', count=1, interval=0.2,
                   headers=part == 'headers')
    r = home.run('sync', env={'IMGURBOX_READ_TIMEOUT': '2'})
    no_traceback(r)
    assert r.code == 0, r
    assert len(requests_to(fake, 'GET', f'/3/album/{album}')) == 2
    assert photos_in(home.path / 'Trip') == {'a.jpg': jpeg(1)}


def test_an_upload_whose_answer_headers_dribble_is_looked_up_then_sent_once_more(home, fake):
    folder = home.folder('Cats', {'a.jpg': jpeg(1)})
    home.write_credentials()
    home.write_albums(f'{folder}\n')
    fake.add_fault('dribble', method='POST', path=r'^/3/image$', count=1, interval=0.2,
                   headers=True)
    r = home.run('sync', env={'IMGURBOX_READ_TIMEOUT': '2'})
    no_traceback(r)
    assert r.code == 0, r                       # unknown outcome: looked up, then resent
    assert len(uploads(fake)) == 2 and len(fake.images) == 1   # the first never acted
    assert home.run('sync').code == 0
    assert len(uploads(fake)) == 2
    assert_mirror(home, fake, [folder])


def test_a_long_title_is_cut_before_it_is_kept(home, fake):
    album = fake.create_album('alice', title='T' * 50_000)
    fake.create_image('alice', jpeg(1), name='a.jpg', album=album)
    home.write_credentials()
    home.write_albums(f'{album}\n')
    r = home.run('sync')
    assert r.code == 0, r
    titles = [a.get('title') or '' for a in load_state(home)['albums'].values()]
    assert titles and max(map(len, titles)) <= 1000


@pytest.mark.parametrize('answer', [{'data': {'id': None}}, {'data': {'id': 12345}},
                                    {'data': ['not', 'an', 'image']},
                                    {'data': {'id': 'abc1234'}, 'success': False}],
                         ids=['null-id', 'integer-id', 'list', 'success-false'])
def test_an_upload_answered_in_the_wrong_shape_fails_that_file_and_is_never_doubled(
        home, fake, answer):
    home.write_credentials()
    folder = home.folder('Cats', {'a.jpg': jpeg(1), 'b.jpg': jpeg(2)})
    home.write_albums(f'{folder}\n')
    assert home.run('sync').code == 0
    (folder / 'c.jpg').write_bytes(jpeg(3))
    fake.add_fault('answer', method='POST', path=r'^/3/image$', count=1, **answer)
    r = home.run('sync')
    no_traceback(r)
    assert r.code == 1, r
    assert 'c.jpg' in r.stdout and 'upload c.jpg' not in r.stdout.replace('Cats/', '')
    assert not any(line.startswith('+ upload') for line in r.stdout.splitlines()), r.stdout
    r = home.run('sync')
    assert r.code == 0, r
    assert_mirror(home, fake, [folder])


def test_an_album_add_answered_success_false_is_not_reported_as_a_move(home, fake):
    home.write_credentials()
    cats = home.folder('Cats', {'a.jpg': jpeg(1)})
    dogs = home.folder('Dogs', {'d.jpg': jpeg(2)})
    home.write_albums(f'{cats}\n{dogs}\n')
    assert home.run('sync').code == 0
    os.replace(cats / 'a.jpg', dogs / 'a.jpg')
    fake.add_fault('answer', method='POST', path=r'/add$', count=1, data=True, success=False)
    r = home.run('sync')
    no_traceback(r)
    assert r.code == 1, r
    assert '> move' not in r.stdout and 'moved' not in r.stdout.splitlines()[-1], r.stdout
    r = home.run('sync')
    assert r.code == 0, r
    assert_mirror(home, fake, [cats, dogs])
    assert len(album_adds(fake)) == 2


def test_an_album_listing_of_the_wrong_type_fails_that_album_only(home, fake):
    home.write_credentials()
    folder = home.folder('Cats', {'a.jpg': jpeg(1)})
    home.write_albums(f'{folder}\n')
    assert home.run('sync').code == 0
    fake.add_fault('answer', path=r'^/3/album/[^/]+/images$', count=None,
                   data={'images': 'none'})
    r = home.run('sync', '--verify')
    no_traceback(r)
    assert r.code == 1, r
    assert 'not a list' in r.stdout + r.stderr


def test_a_token_answer_that_is_not_json_is_not_taken_as_a_refusal(home, fake):
    home.write_credentials()
    home.write_albums(f"{home.folder('Cats', {'a.jpg': jpeg(1)})}\n")
    fake.expire_access_tokens()
    fake.add_fault('answer', path=r'^/oauth2/token$', count=None, raw=b'<html>portal')
    r = home.run('sync')
    no_traceback(r)
    assert r.code == 1, r                       # a failed request, never exit 5
    assert len(token_requests(fake)) >= 2       # retried like a connection error


# -- downloads ------------------------------------------------------------------------------

def test_a_download_longer_than_imgur_said_is_cut_and_not_kept(home, fake):
    album = fake.create_album('alice', title='Trip')
    image = fake.create_image('alice', jpeg(1), name='a.jpg', album=album)
    home.write_credentials()
    home.write_albums(f'{album}\n')
    fake.add_fault('huge', path=rf'^/i/{image}\.', count=None, size=1 << 30)
    r = home.run('sync')
    no_traceback(r)
    assert r.code == 1, r
    assert 'not kept' in r.stdout
    folder = home.path / 'Trip'
    assert os.listdir(folder) == []
    fake.clear_faults()
    assert home.run('sync').code == 0
    assert photos_in(folder) == {'a.jpg': jpeg(1)}


def test_a_symlink_planted_where_a_download_is_written_is_never_followed(home, fake, tmp_path):
    album = fake.create_album('alice', title='Trip')
    image = fake.create_image('alice', jpeg(1), name='a.jpg', album=album)
    outside = tmp_path / 'outside.txt'
    outside.write_bytes(b'precious')
    folder = home.folder('Trip')
    planted = folder / f'.imgurbox-{image}.part'           # the name 1.0 used
    planted.symlink_to(outside)
    home.write_credentials()
    home.write_albums(f'{folder} -> {album}\n')
    r = home.run('sync')
    assert r.code == 0, r
    assert outside.read_bytes() == b'precious'
    photo = folder / 'a.jpg'
    assert photo.is_file() and not photo.is_symlink()
    assert photos_in(folder) == {'a.jpg': jpeg(1)}
    assert not os.path.lexists(planted), 'the stale name is cleared, not followed'
    assert sorted(os.listdir(folder)) == ['a.jpg']


def test_a_dry_run_never_follows_a_redirect_either(home, fake, other_host):
    home.write_credentials()
    home.write_albums(f"{home.folder('Cats', {'a.jpg': jpeg(1)})}\n")
    assert home.run('sync').code == 0
    fake.add_fault('redirect', count=None, location=other_host.url)
    r = home.run('sync', '--dry-run', '--verify')
    no_traceback(r)
    assert requests_to(fake, 'GET', '/3/album/' + load_state(home)['albums'].popitem()[0]
                       + '/images'), 'the dry run did not read the album'
    assert other_host.received == []
