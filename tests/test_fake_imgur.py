"""Contract tests of the fake Imgur server.

Expected answers come from Imgur's public documentation and public reports of how it
behaves (quirks included, each listed with its source in the fake's docstring), never
from what imgurbox happens to do, so that the fake cannot drift towards the client.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import zlib
from pathlib import Path

import imgurpython.client
import pytest
import requests
from imgurpython import ImgurClient

from conftest import default_sigint
from fake_imgur import (DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, MB,
                        REGION_PLACEHOLDER_PNG, REMOVED_PNG, FakeImgur, make_gif, make_jpeg,
                        make_png)

pytestmark = pytest.mark.timeout(30)

ANON = {'Authorization': f'Client-ID {DEFAULT_CLIENT_ID}'}
TIMEOUT = 5


def bearer(token: str) -> dict:
    return {'Authorization': f'Bearer {token}'}


def call(fake, method, path, headers=None, form=False, **kwargs) -> requests.Response:
    """One request to the fake, on a fresh connection like imgurpython makes. An album
    write's ``data`` goes as multipart/form-data, as Imgur takes it since December 2024
    (the fake's docstring, "Album writes"); ``form=True`` sends it form-urlencoded."""
    data = kwargs.get('data')
    if not form and isinstance(data, dict) and path.startswith('3/album') \
            and method in ('POST', 'PUT'):
        del kwargs['data']
        kwargs['files'] = [(key, (None, str(item))) for key, value in data.items()
                           for item in (value if isinstance(value, list) else [value])]
    return requests.request(method, fake.url + path, headers=headers, timeout=TIMEOUT,
                            **kwargs)


def token_form(**fields) -> dict:
    return {'client_id': DEFAULT_CLIENT_ID, 'client_secret': DEFAULT_CLIENT_SECRET, **fields}


@pytest.fixture
def alice(fake):
    """Authorization headers for alice."""
    return bearer(fake.credentials()['access_token'])


@pytest.fixture
def bob(fake):
    """Authorization headers for a second account, bob."""
    fake.add_account('bob')
    return bearer(fake.credentials('bob')['access_token'])


@pytest.fixture
def imgurpython_api(fake, monkeypatch):
    """Point imgurpython at the fake (its API_URL is read at each request)."""
    monkeypatch.setattr(imgurpython.client, 'API_URL', fake.url)


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, 'condition not met in time'
        time.sleep(0.01)


def upload(fake, headers, data=None, filename='photo.jpg', **fields):
    data = make_jpeg(seed=filename) if data is None else data
    return call(fake, 'POST', '3/image', headers, files={'image': (filename, data)},
                data=fields)


# ---------------------------------------------------------------------------
# Envelope, authentication, models
# ---------------------------------------------------------------------------

def test_success_envelope_and_account(fake, alice):
    answer = call(fake, 'GET', '3/account/me', alice)
    assert answer.status_code == 200
    body = answer.json()
    assert body['success'] is True and body['status'] == 200
    assert body['data']['url'] == 'alice'
    assert isinstance(body['data']['id'], int)


def test_error_envelope_for_unknown_album(fake, alice):
    answer = call(fake, 'GET', '3/album/nope123', alice)
    assert answer.status_code == 404
    assert answer.json() == {
        'data': {'error': 'Unable to find an album with the id, nope123',
                 'request': '/3/album/nope123', 'method': 'GET'},
        'success': False, 'status': 404}


def test_missing_auth_is_401_and_bad_token_is_403(fake):
    assert call(fake, 'GET', '3/account/me').status_code == 401
    answer = call(fake, 'GET', '3/account/me', bearer('not-a-token'))
    assert answer.status_code == 403
    assert 'access token' in answer.json()['data']['error']


def test_client_id_reads_albums_but_cannot_act_as_a_user(fake):
    album_id = fake.create_album('alice', 'Trip')
    assert call(fake, 'GET', f'3/album/{album_id}', ANON).status_code == 200
    assert call(fake, 'GET', f'3/album/{album_id}/images', ANON).status_code == 200
    assert call(fake, 'POST', '3/album', ANON, data={'title': 'x'}).status_code == 401
    assert call(fake, 'GET', '3/account/me', ANON).status_code == 401
    assert len(fake.albums) == 1


def test_image_model_fields_and_ids(fake, alice, bob):
    answer = upload(fake, alice, make_png(33, 21, seed=1), filename='p.png', title='T')
    image = answer.json()['data']
    assert re.fullmatch(r'[A-Za-z0-9]{7}', image['id'])
    for field in ('id', 'title', 'description', 'datetime', 'type', 'animated', 'width',
                  'height', 'size', 'views', 'bandwidth', 'deletehash', 'name', 'link'):
        assert field in image
    assert (image['type'], image['width'], image['height']) == ('image/png', 33, 21)
    assert image['title'] == 'T' and image['name'] == 'p.png'
    assert image['link'] == f'{fake.url}i/{image["id"]}.png'
    assert isinstance(image['datetime'], int) and abs(image['datetime'] - fake.now()) < 5
    # Someone else sees neither the deletehash nor the file name.
    other = call(fake, 'GET', f'3/image/{image["id"]}', bob).json()['data']
    assert 'deletehash' not in other and other['name'] is None
    assert call(fake, 'GET', '3/image/missing', alice).status_code == 404


def test_image_types_and_dimensions(fake, alice):
    gif = upload(fake, alice, make_gif(5, 6, frames=2), filename='a.gif').json()['data']
    assert (gif['type'], gif['width'], gif['height'], gif['animated']) == (
        'image/gif', 5, 6, True)
    jpeg = upload(fake, alice, make_jpeg(640, 480), filename='b.jpg').json()['data']
    assert (jpeg['type'], jpeg['width'], jpeg['height']) == ('image/jpeg', 640, 480)
    tiff = upload(fake, alice, b'II*\x00' + bytes(100), filename='c.tif').json()['data']
    assert tiff['type'] == 'image/tiff'


# ---------------------------------------------------------------------------
# Uploads
# ---------------------------------------------------------------------------

def test_multipart_upload_takes_name_from_filename(fake, alice):
    album_id = fake.create_album('alice', 'A')
    data = make_jpeg(seed=7) + b'\r\n\r\n\n\r'    # line endings must survive the parser
    answer = upload(fake, alice, data, filename='Été 2024.jpg', album=album_id)
    assert answer.status_code == 200
    image = answer.json()['data']
    assert image['name'] == 'Été 2024.jpg'
    assert fake.album_image_ids(album_id) == [image['id']]
    assert fake.image_bytes(image['id']) == data
    assert fake.images[image['id']].owner == 'alice'


def test_explicit_name_wins_over_filename(fake, alice):
    answer = upload(fake, alice, filename='upload.bin', name='real.jpg')
    assert answer.json()['data']['name'] == 'real.jpg'


def test_base64_form_upload(fake, alice):
    album_id = fake.create_album('alice')
    data = make_png(seed=2)
    answer = call(fake, 'POST', '3/upload', alice, data={
        'image': base64.b64encode(data), 'type': 'base64', 'album': album_id,
        'name': 'b.png'})
    assert answer.status_code == 200
    image_id = answer.json()['data']['id']
    assert fake.image_bytes(image_id) == data
    assert fake.album_image_ids(album_id) == [image_id]
    assert fake.images[image_id].name == 'b.png'


def test_chunked_upload_body(fake, alice):
    """A streamed body without a length arrives chunked; the fake must read it."""
    data = base64.b64encode(make_jpeg(seed=3)).decode()
    body = urllib.parse.urlencode({'image': data, 'type': 'base64'}).encode()
    answer = call(fake, 'POST', '3/image', {**alice, 'Content-Type':
                  'application/x-www-form-urlencoded'}, data=iter([body[:50], body[50:]]))
    assert answer.status_code == 200
    assert answer.request.headers.get('Transfer-Encoding') == 'chunked'


def test_imgurpython_uploads(fake, imgurpython_api, tmp_path):
    creds = fake.credentials()
    client = ImgurClient(creds['client_id'], creds['client_secret'],
                         creds['access_token'], creds['refresh_token'])
    album_id = fake.create_album('alice')
    path = tmp_path / 'x.jpg'
    path.write_bytes(make_jpeg(seed=4))
    # With the user's auth, album and name: the image is alice's, in the album.
    image = client.upload_from_path(str(path), config={'album': album_id, 'name': 'x.jpg'},
                                    anon=False)
    assert fake.album_image_ids(album_id) == [image['id']]
    assert fake.images[image['id']].name == 'x.jpg'
    # The default is anonymous: no owner, and the album field is silently ignored.
    anonymous = client.upload_from_path(str(path), config={'album': album_id})
    assert fake.images[anonymous['id']].owner is None
    assert fake.album_image_ids(album_id) == [image['id']]
    assert 'deletehash' in anonymous        # the uploader still gets it


def test_upload_refuses_non_images(fake, alice):
    answer = upload(fake, alice, b'%PDF-1.4 not an image', filename='doc.jpg')
    assert answer.status_code == 400
    error = answer.json()['data']['error']
    assert error['code'] == 1003 and 'message' in error and 'type' in error
    assert upload(fake, alice, b'', filename='empty.jpg').status_code == 400
    assert fake.images == {}


def test_upload_refuses_oversize_files(fake, alice):
    fake.max_image_size = 2000      # stands in for 20 MB
    fake.max_gif_size = 20000       # stands in for 200 MB
    assert upload(fake, alice, make_jpeg(size=3000), filename='big.jpg').status_code == 400
    assert upload(fake, alice, make_gif() + bytes(3000), filename='a.gif').status_code == 200
    assert len(fake.images) == 1
    assert FakeImgur().max_image_size == 20 * MB and FakeImgur().max_gif_size == 200 * MB


def test_upload_into_another_accounts_album_is_refused(fake, alice, bob):
    album_id = fake.create_album('bob')
    answer = upload(fake, alice, album=album_id)
    assert answer.status_code == 403
    assert 'not the owner' in answer.json()['data']['error']
    assert fake.images == {}


def test_upload_strips_metadata_and_converts_large_png(fake, alice):
    xmp = (0xE1, b'http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta/>')
    jpeg = make_jpeg(seed=5, segments=(xmp,))
    image = upload(fake, alice, jpeg).json()['data']
    assert fake.image_bytes(image['id']) != jpeg
    assert image['size'] < len(jpeg)
    fake.png_to_jpeg_size = 100
    png = upload(fake, alice, make_png(30, 30, seed=6), filename='p.png').json()['data']
    assert png['type'] == 'image/jpeg' and png['link'].endswith('.jpg')


# ---------------------------------------------------------------------------
# Albums
# ---------------------------------------------------------------------------

def test_create_album_answer_and_defaults(fake, alice):
    fake.advance(1000)
    answer = call(fake, 'POST', '3/album', alice, data={'title': 'Trip'})
    assert set(answer.json()['data']) == {'id', 'deletehash'}
    album = call(fake, 'GET', f'3/album/{answer.json()["data"]["id"]}', alice).json()['data']
    assert album['title'] == 'Trip' and album['account_url'] == 'alice'
    assert abs(album['datetime'] - fake.now()) < 5 and album['datetime'] > time.time() + 900
    assert album['privacy'] == 'public'         # the account's setting by default
    assert album['link'] == f'https://imgur.com/a/{album["id"]}'
    assert album['images'] == [] and album['images_count'] == 0
    assert album['deletehash'] == answer.json()['data']['deletehash']
    hidden = call(fake, 'POST', '3/album', alice, data={'title': 'H', 'privacy': 'hidden'})
    assert fake.albums[hidden.json()['data']['id']].privacy == 'hidden'


def test_create_album_with_ids(fake, alice, bob):
    mine = fake.create_image('alice', make_jpeg(seed=1))
    theirs = fake.create_image('bob', make_jpeg(seed=2))
    answer = call(fake, 'POST', '3/album', alice, data={'ids[]': [mine, theirs]})
    assert fake.album_image_ids(answer.json()['data']['id']) == [mine]


def test_album_images_and_count(fake, alice):
    album_id = fake.create_album('alice')
    ids = [fake.create_image('alice', make_jpeg(seed=n), name=f'{n}.jpg', album=album_id)
           for n in range(3)]
    album = call(fake, 'GET', f'3/album/{album_id}', alice).json()['data']
    assert album['images_count'] == 3 and [i['id'] for i in album['images']] == ids
    assert album['cover'] == ids[0]
    images = call(fake, 'GET', f'3/album/{album_id}/images', alice).json()['data']
    assert [i['name'] for i in images] == ['0.jpg', '1.jpg', '2.jpg']


def test_other_accounts_album_is_readable_without_deletehash(fake, alice, bob):
    album_id = fake.create_album('bob', 'Bob')
    fake.create_image('bob', make_jpeg(), name='b.jpg', album=album_id)
    for headers in (alice, ANON):
        album = call(fake, 'GET', f'3/album/{album_id}', headers).json()['data']
        assert album['account_url'] == 'bob' and 'deletehash' not in album
        assert 'deletehash' not in album['images'][0]
    assert 'deletehash' in call(fake, 'GET', f'3/album/{album_id}', bob).json()['data']
    # Reading is allowed, changing is not.
    mine = fake.create_image('alice', make_jpeg(seed=9))
    assert call(fake, 'POST', f'3/album/{album_id}/add', alice,
                data={'ids[]': mine}).status_code == 403
    assert call(fake, 'DELETE', f'3/album/{album_id}', alice).status_code == 403


@pytest.mark.parametrize('style', ['ids[]', 'comma', 'query'])
def test_album_add_accepts_every_id_style(fake, alice, style):
    album_id = fake.create_album('alice')
    ids = [fake.create_image('alice', make_jpeg(seed=n)) for n in range(3)]
    if style == 'ids[]':
        kwargs = {'data': {'ids[]': ids}}
    elif style == 'comma':
        kwargs = {'data': {'ids': ','.join(ids)}}
    else:
        kwargs = {'params': {'ids': ','.join(ids)}}
    answer = call(fake, 'POST', f'3/album/{album_id}/add', alice, **kwargs)
    if style == 'query':                # fields outside a multipart or JSON body
        assert answer.status_code == 400 and fake.album_image_ids(album_id) == []
        return
    assert answer.json() == {'data': True, 'success': True, 'status': 200}
    assert fake.album_image_ids(album_id) == ids


def test_album_writes_refuse_form_bodies_and_take_multipart_or_json(fake, alice):
    """Since December 2024 (the fake's docstring, "Album writes")."""
    album_id = fake.create_album('alice', 'Old')
    image_id = fake.create_image('alice', make_jpeg())
    for path, fields in (('3/album', {'title': 'x'}), (f'3/album/{album_id}', {'title': 'x'}),
                         (f'3/album/{album_id}/add', {'ids[]': [image_id]}),
                         (f'3/album/{album_id}/remove_images', {'ids[]': [image_id]})):
        answer = call(fake, 'POST', path, alice, form=True, data=fields)
        assert answer.status_code == 400 and answer.json()['success'] is False, path
    assert len(fake.albums) == 1 and fake.albums[album_id].title == 'Old'
    assert fake.album_image_ids(album_id) == []
    assert call(fake, 'POST', f'3/album/{album_id}/add', alice,
                data={'ids[]': [image_id]}).ok                      # multipart
    assert call(fake, 'POST', f'3/album/{album_id}', alice, json={'title': 'New'}).ok
    assert fake.album_image_ids(album_id) == [image_id]
    assert fake.albums[album_id].title == 'New'
    fake.album_form_bodies = True                                    # Imgur before 2025
    assert call(fake, 'POST', f'3/album/{album_id}', alice, form=True,
                data={'title': 'Form'}).ok


def test_album_add_naming_an_image_not_owned_is_refused_whole(fake, alice, bob):
    """403 "You must own all the image ids ..." (the fake's docstring, "Album writes")."""
    album_id = fake.create_album('alice')
    mine = fake.create_image('alice', make_jpeg(seed=1))
    gone = fake.create_image('alice', make_jpeg(seed=2))
    fake.delete_image(gone)
    bobs = fake.create_image('bob', make_jpeg(seed=3))
    for other in (gone, bobs):
        answer = call(fake, 'POST', f'3/album/{album_id}/add', alice,
                      data={'ids[]': [mine, other]})
        assert answer.status_code == 403, answer.text
        assert answer.json()['data']['error'] == (
            f'You must own all the image ids to add them to album {album_id}')
        assert fake.album_image_ids(album_id) == []


def test_album_add_and_remove_fail_silently(fake, alice, bob):
    album_id = fake.create_album('alice')
    inside = fake.create_image('alice', make_jpeg(seed=1), album=album_id)
    outside = fake.create_image('alice', make_jpeg(seed=2))
    bobs = fake.create_image('bob', make_jpeg(seed=3))
    fake.add_refuses_unowned = False        # the behaviour older clients describe
    # Unknown, someone else's, already there: success all the same, album unchanged.
    answer = call(fake, 'POST', f'3/album/{album_id}/add', alice,
                  data={'ids[]': ['zzzzzzz', bobs, inside]})
    assert answer.status_code == 200 and answer.json()['data'] is True
    assert fake.album_image_ids(album_id) == [inside]
    # Removing what is not in the album: success, nothing changes.
    for method in ('POST', 'DELETE'):
        answer = call(fake, method, f'3/album/{album_id}/remove_images', alice,
                      data={'ids': f'zzzzzzz,{outside}'})
        assert answer.status_code == 200 and answer.json()['success'] is True
    assert fake.album_image_ids(album_id) == [inside]
    assert call(fake, 'POST', '3/album/nothere/add', alice,
                data={'ids': inside}).status_code == 404


def test_album_remove_images_post_and_delete(fake, alice):
    album_id = fake.create_album('alice')
    ids = [fake.create_image('alice', make_jpeg(seed=n), album=album_id) for n in range(3)]
    call(fake, 'POST', f'3/album/{album_id}/remove_images', alice, data={'ids[]': ids[0]})
    assert fake.album_image_ids(album_id) == ids[1:]
    # Older form: DELETE with ids in the query string (imgurpython's): since 2025 it
    # answers success and removes nothing (the fake's docstring, "Album writes").
    answer = call(fake, 'DELETE', f'3/album/{album_id}/remove_images', alice,
                  params={'ids': ids[1]}, data={'ids': ids[1]})
    assert answer.json()['success'] is True
    assert fake.album_image_ids(album_id) == ids[1:]
    assert ids[0] in fake.images            # removed from the album, not deleted


def test_album_update_and_delete(fake, alice):
    album_id = fake.create_album('alice', 'Old')
    ids = [fake.create_image('alice', make_jpeg(seed=n), album=album_id) for n in range(2)]
    assert call(fake, 'PUT', f'3/album/{album_id}', alice, data={'title': 'New'}).ok
    assert fake.albums[album_id].title == 'New'
    assert fake.album_image_ids(album_id) == ids        # no ids: the set stays
    assert call(fake, 'POST', f'3/album/{album_id}', alice, data={'ids': ids[1]}).ok
    assert fake.album_image_ids(album_id) == ids[1:]    # ids replaces the set
    answer = call(fake, 'DELETE', f'3/album/{album_id}', alice)
    assert answer.json()['data'] is True
    assert album_id not in fake.albums and set(ids) <= set(fake.images)
    assert call(fake, 'GET', f'3/album/{album_id}', alice).status_code == 404


def test_imgurpython_album_calls(fake, imgurpython_api):
    creds = fake.credentials()
    client = ImgurClient(creds['client_id'], creds['client_secret'],
                         creds['access_token'], creds['refresh_token'])
    # imgurpython's album writes are form-urlencoded: refused since December 2024.
    with pytest.raises(Exception):
        client.create_album({'title': 'Via imgurpython', 'privacy': 'hidden'})
    assert fake.albums == {}
    fake.album_form_bodies = True
    album_id = client.create_album({'title': 'Via imgurpython', 'privacy': 'hidden'})['id']
    image_id = fake.create_image('alice', make_jpeg())
    client.album_add_images(album_id, [image_id])
    assert [i.id for i in client.get_album_images(album_id)] == [image_id]
    client.album_remove_images(album_id, [image_id])   # its DELETE form: a no-op now
    assert client.get_album(album_id).images_count == 1
    assert client.get_account('me').url == 'alice'


def test_account_albums_come_in_pages_of_50(fake, alice):
    created = [fake.create_album('alice', f'album {n}') for n in range(120)]
    pages = [call(fake, 'GET', f'3/account/me/albums/{page}', alice).json()['data']
             for page in range(4)]
    assert [len(page) for page in pages] == [50, 50, 20, 0]
    listed = [album['id'] for page in pages for album in page]
    assert sorted(listed) == sorted(created)
    assert listed[0] == created[-1]         # newest first
    assert all('deletehash' in album for album in pages[0])
    assert call(fake, 'GET', '3/account/me/albums', alice).json()['data'] == pages[0]


def test_hidden_albums_are_not_listed_for_others(fake, alice, bob):
    fake.create_album('bob', 'secret one', privacy='hidden')
    public = fake.create_album('bob', 'public one', privacy='public')
    listed = call(fake, 'GET', '3/account/bob/albums/0', alice).json()['data']
    assert [album['id'] for album in listed] == [public]


# ---------------------------------------------------------------------------
# Images: update, delete, links
# ---------------------------------------------------------------------------

def test_update_image(fake, alice, bob):
    image_id = fake.create_image('alice', make_jpeg())
    assert call(fake, 'POST', f'3/image/{image_id}', alice, data={'title': 'T'}).ok
    assert fake.images[image_id].title == 'T'
    assert call(fake, 'POST', f'3/image/{image_id}', bob,
                data={'title': 'X'}).status_code == 403


def test_update_image_description_and_upload_description(fake, alice):
    """Imgur's API documentation, "Update Image Information": POST /3/image/{id} (also
    PUT) with `title` and/or `description`, answering data true; a field not sent is
    left as it is. "Image Upload" takes `description` with the upload, in the Image
    model's `description` from then on. Form and multipart bodies both work for images
    (the December 2024 change is about album writes)."""
    image_id = fake.create_image('alice', make_jpeg(), title='Kept', description='old')
    answer = call(fake, 'POST', f'3/image/{image_id}', alice, files={'description': (None, 'new')})
    assert answer.ok and answer.json()['data'] is True
    assert (fake.images[image_id].title, fake.images[image_id].description) == ('Kept', 'new')
    assert call(fake, 'POST', f'3/image/{image_id}', alice, data={'description': ''}).ok
    model = call(fake, 'GET', f'3/image/{image_id}', alice).json()['data']
    assert model['description'] == '' and model['title'] == 'Kept'
    assert call(fake, 'PUT', f'3/image/{image_id}', alice, data={'description': 'x'}).ok
    assert call(fake, 'POST', f'3/image/{image_id}', ANON,
                data={'description': 'y'}).status_code == 401
    uploaded = upload(fake, alice, description='A caption').json()['data']
    assert uploaded['description'] == 'A caption'
    assert fake.images[uploaded['id']].description == 'A caption'


def test_delete_image_takes_it_out_of_every_album(fake, alice):
    first, second = fake.create_album('alice'), fake.create_album('alice')
    image_id = fake.create_image('alice', make_jpeg(), album=first)
    call(fake, 'POST', f'3/album/{second}/add', alice, data={'ids[]': image_id})
    assert fake.album_image_ids(second) == [image_id]
    answer = call(fake, 'DELETE', f'3/image/{image_id}', alice)
    assert answer.json() == {'data': True, 'success': True, 'status': 200}
    assert fake.album_image_ids(first) == fake.album_image_ids(second) == []
    assert call(fake, 'GET', f'3/image/{image_id}', alice).status_code == 404
    assert call(fake, 'DELETE', f'3/image/{image_id}', alice).status_code == 404


def test_deleting_another_accounts_image_is_refused(fake, alice, bob):
    image_id = fake.create_image('bob', make_jpeg())
    answer = call(fake, 'DELETE', f'3/image/{image_id}', alice)
    assert answer.status_code == 403
    assert 'not the owner' in answer.json()['data']['error']
    assert image_id in fake.images


def test_image_bytes_at_link_without_auth(fake, alice):
    data = make_png(seed=11)
    link = upload(fake, alice, data, filename='p.png').json()['data']['link']
    answer = requests.get(link, timeout=TIMEOUT)
    assert answer.status_code == 200
    assert answer.content == data and answer.headers['Content-Type'] == 'image/png'
    assert fake.credits_used == 10      # the download was free


def test_deleted_image_link_ends_at_removed_png(fake, alice):
    image = upload(fake, alice).json()['data']
    call(fake, 'DELETE', f'3/image/{image["id"]}', alice)
    answer = requests.get(image['link'], timeout=TIMEOUT, allow_redirects=False)
    assert answer.status_code == 302
    assert answer.headers['Location'] == f'{fake.url}removed.png'
    followed = requests.get(image['link'], timeout=TIMEOUT)
    assert followed.url == f'{fake.url}removed.png'
    assert followed.content == REMOVED_PNG and followed.content.startswith(b'\x89PNG')


# ---------------------------------------------------------------------------
# Credits and rate limits
# ---------------------------------------------------------------------------

def test_credit_costs(fake, alice):
    assert fake.credits_used == 0
    upload(fake, alice)
    assert fake.credits_used == 10
    answer = call(fake, 'GET', '3/account/me', alice)
    assert fake.credits_used == 11
    assert answer.headers['X-RateLimit-UserRemaining'] == str(12500 - 11)
    refresh = fake.issue_tokens()['refresh_token']
    call(fake, 'POST', 'oauth2/token', data=token_form(grant_type='refresh_token',
                                                      refresh_token=refresh))
    assert fake.credits_used == 11


def test_credits_endpoint(fake):
    credits = call(fake, 'GET', '3/credits', ANON).json()['data']
    assert {'UserLimit', 'UserRemaining', 'UserReset', 'ClientLimit',
            'ClientRemaining'} <= set(credits)
    assert credits['UserRemaining'] == 12499


def test_rate_limit_headers_epoch(fake, alice):
    answer = call(fake, 'GET', '3/account/me', alice)
    headers = answer.headers
    assert headers['X-RateLimit-UserLimit'] == '12500'
    assert headers['X-RateLimit-ClientLimit'] == '12500'
    assert headers['X-RateLimit-ClientRemaining'] == '12499'
    assert abs(int(headers['X-RateLimit-UserReset']) - (fake.now() + 3600)) < 5
    assert int(headers['X-RateLimit-ClientReset']) >= 10 ** 9
    assert 'X-Post-Rate-Limit-Remaining' not in headers     # only on POST answers
    posted = upload(fake, alice).headers
    assert posted['X-Post-Rate-Limit-Limit'] == '1250'
    assert posted['X-Post-Rate-Limit-Remaining'] == '1249'
    assert 0 < int(posted['X-Post-Rate-Limit-Reset']) <= 3600


def test_rate_limit_headers_relative(fake, alice):
    fake.reset_style = 'relative'
    call(fake, 'GET', '3/account/me', alice)
    fake.advance(600)
    headers = call(fake, 'GET', '3/account/me', alice).headers
    assert 2990 <= int(headers['X-RateLimit-UserReset']) <= 3000
    assert int(headers['X-RateLimit-ClientReset']) < 10 ** 9


def test_rate_header_values_replace_what_is_sent_and_nothing_else(fake, alice):
    fake.rate_header_values = {'x-ratelimit-userreset': '9e18',
                               'X-Post-Rate-Limit-Reset': '1700000000000'}
    headers = call(fake, 'GET', '3/account/me', alice).headers
    assert headers['X-RateLimit-UserReset'] == '9e18'
    assert headers['X-RateLimit-UserRemaining'] == '12499'       # still counted
    assert int(headers['X-RateLimit-ClientReset']) >= 10 ** 9
    assert 'X-Post-Rate-Limit-Reset' not in headers               # only on POST answers
    posted = upload(fake, alice).headers
    assert posted['X-Post-Rate-Limit-Reset'] == '1700000000000'
    assert posted['X-Post-Rate-Limit-Remaining'] == '1249'
    fake.rate_header_values = {}
    headers = call(fake, 'GET', '3/account/me', alice).headers
    assert abs(int(headers['X-RateLimit-UserReset']) - (fake.now() + 3600)) < 5


def test_fault_upload_name_matches_only_uploads_of_that_name(fake, alice):
    fault = fake.add_fault('status', method='POST', path=r'^/3/image$', count=None,
                           upload_name='\ufffd', code=400, message='Invalid name')
    answer = upload(fake, alice, name='Caf\ufffd.jpg')
    assert answer.status_code == 400 and answer.json()['data']['error'] == 'Invalid name'
    assert len(fake.images) == 0 and fault.fired == 1
    assert upload(fake, alice, filename='plain.jpg', name='plain.jpg').status_code == 200
    assert upload(fake, alice, filename='none.jpg').status_code == 200      # no name field
    assert fault.fired == 1 and len(fake.images) == 2


def test_every_api_answer_carries_rate_headers(fake):
    for answer in (call(fake, 'GET', '3/account/me'),             # 401
                   call(fake, 'GET', '3/album/nope123', ANON)):   # 404
        assert 'X-RateLimit-UserRemaining' in answer.headers


def test_429_when_user_budget_is_spent(fake, alice):
    fake.user_limit = 15
    assert upload(fake, alice).status_code == 200
    answer = upload(fake, alice, filename='second.jpg')
    assert answer.status_code == 429
    body = answer.json()
    assert body['success'] is False and body['status'] == 429
    assert re.fullmatch(r'You are uploading too fast\. Please wait \d+ more minutes\.',
                        body['data']['error'])
    assert answer.headers['X-RateLimit-UserRemaining'] == '5'
    assert len(fake.images) == 1 and fake.credits_used == 10   # not performed, not paid
    # A GET still fits; then the hour passes and the budget refills.
    assert call(fake, 'GET', '3/account/me', alice).status_code == 200
    fake.advance(3600)
    fresh = bearer(fake.issue_tokens()['access_token'])     # alice's token expired too
    assert upload(fake, fresh, filename='third.jpg').status_code == 200


def test_429_errors_shape(fake, alice):
    fake.user_limit = 0
    fake.rate_limit_shape = 'errors'
    answer = call(fake, 'GET', '3/account/me', alice)
    assert answer.status_code == 429
    assert answer.headers['Content-Type'] == 'application/vnd.imgur.v1+json'
    body = answer.json()
    assert 'data' not in body
    assert body['errors'][0]['code'] == '429'
    assert body['errors'][0]['status'] == 'Too Many Requests'
    assert 'wait' in body['errors'][0]['detail']


def test_client_budget_refills_after_a_day(fake, alice):
    fake.client_limit = 2
    fake.hour = 10
    for _ in range(2):
        assert call(fake, 'GET', '3/account/me', alice).status_code == 200
    assert call(fake, 'GET', '3/account/me', alice).status_code == 429
    fake.advance(10)                            # an hour: not enough
    assert call(fake, 'GET', '3/account/me', alice).status_code == 429
    fake.advance(230)                           # a day
    assert call(fake, 'GET', '3/account/me', alice).status_code == 200


def test_post_limit(fake, alice):
    fake.post_limit = 1
    assert call(fake, 'POST', '3/album', alice).status_code == 200
    answer = call(fake, 'POST', '3/album', alice)
    assert answer.status_code == 429 and answer.headers['X-Post-Rate-Limit-Remaining'] == '0'
    assert call(fake, 'GET', '3/account/me', alice).status_code == 200
    assert len(fake.albums) == 1


# ---------------------------------------------------------------------------
# OAuth
# ---------------------------------------------------------------------------

def test_expired_token_then_refresh(fake):
    creds = fake.credentials()
    fake.expire_access_tokens()
    answer = call(fake, 'GET', '3/account/me', bearer(creds['access_token']))
    assert answer.status_code == 403
    assert answer.json()['data']['error'] == 'The access token provided is invalid.'
    refreshed = call(fake, 'POST', 'oauth2/token', data=token_form(
        grant_type='refresh_token', refresh_token=creds['refresh_token']))
    assert refreshed.status_code == 200
    tokens = refreshed.json()
    assert 'data' not in tokens             # no envelope
    assert tokens['token_type'] == 'bearer' and tokens['account_username'] == 'alice'
    assert {'access_token', 'expires_in', 'refresh_token', 'account_id'} <= set(tokens)
    assert tokens['refresh_token'] != creds['refresh_token']
    assert call(fake, 'GET', '3/account/me', bearer(tokens['access_token'])).ok
    # The old refresh token keeps working until revoked.
    again = call(fake, 'POST', 'oauth2/token', data=token_form(
        grant_type='refresh_token', refresh_token=creds['refresh_token']))
    assert again.status_code == 200


def test_access_token_expires_on_the_fake_clock(fake):
    fake.token_ttl = 60
    tokens = fake.issue_tokens()
    assert tokens['expires_in'] == 60
    assert call(fake, 'GET', '3/account/me', bearer(tokens['access_token'])).ok
    fake.advance(61)
    assert call(fake, 'GET', '3/account/me',
                bearer(tokens['access_token'])).status_code == 403


@pytest.mark.parametrize('fields, message', [
    ({'grant_type': 'refresh_token', 'refresh_token': 'unknown'}, 'Invalid refresh token'),
    ({'grant_type': 'refresh_token', 'client_secret': 'wrong'}, 'Invalid client_secret'),
    ({'grant_type': 'pin', 'pin': 'nope'}, 'Invalid pin'),
    ({'grant_type': 'authorization_code', 'code': 'nope'}, 'Invalid code'),
    ({'grant_type': 'password'}, 'Invalid grant_type'),
])
def test_refused_token_requests(fake, fields, message):
    form = token_form(**{'refresh_token': fake.issue_tokens()['refresh_token'], **fields})
    answer = call(fake, 'POST', 'oauth2/token', data=form)
    assert answer.status_code == 400
    body = answer.json()
    assert body['success'] is False and body['status'] == 400
    assert body['data']['error'] == message
    assert body['data']['request'] == '/oauth2/token'


def test_revoked_refresh_token(fake):
    refresh = fake.issue_tokens()['refresh_token']
    fake.revoke_refresh_tokens()
    answer = call(fake, 'POST', 'oauth2/token', data=token_form(
        grant_type='refresh_token', refresh_token=refresh))
    assert answer.status_code == 400
    assert answer.json()['data']['error'] == 'Invalid refresh token'


def test_imgurpython_refreshes_after_403(fake, imgurpython_api):
    creds = fake.credentials()
    client = ImgurClient(creds['client_id'], creds['client_secret'],
                         creds['access_token'], creds['refresh_token'])
    album_id = fake.create_album('alice', 'A')
    fake.expire_access_tokens()
    fake.reset_requests()
    assert client.get_album(album_id).title == 'A'
    assert [(r.path, r.status) for r in fake.api_requests()] == [
        (f'/3/album/{album_id}', 403), ('/oauth2/token', 200), (f'/3/album/{album_id}', 200)]


def test_authorize_token_redirect(fake):
    fake.add_account('carol')
    fake.authorize_account = 'carol'
    answer = call(fake, 'GET', 'oauth2/authorize', allow_redirects=False, params={
        'client_id': DEFAULT_CLIENT_ID, 'response_type': 'token', 'state': 's1'})
    assert answer.status_code == 302
    location = urllib.parse.urlsplit(answer.headers['Location'])
    assert location.geturl().startswith(f'{fake.url}callback#')
    fragment = dict(urllib.parse.parse_qsl(location.fragment))
    assert fragment['token_type'] == 'bearer' and fragment['account_username'] == 'carol'
    assert fragment['state'] == 's1' and int(fragment['expires_in']) > 0
    assert {'refresh_token', 'account_id'} <= set(fragment)
    me = call(fake, 'GET', '3/account/me', bearer(fragment['access_token'])).json()['data']
    assert me['url'] == 'carol'
    page = requests.get(answer.headers['Location'], timeout=TIMEOUT)
    assert page.status_code == 200 and 'text/html' in page.headers['Content-Type']


def test_authorize_pin_flow(fake):
    page = call(fake, 'GET', 'oauth2/authorize', params={
        'client_id': DEFAULT_CLIENT_ID, 'response_type': 'pin'})
    assert page.status_code == 200 and 'text/html' in page.headers['Content-Type']
    pin = re.search(r'<code id="pin">(\w+)</code>', page.text).group(1)
    answer = call(fake, 'POST', 'oauth2/token', data=token_form(grant_type='pin', pin=pin))
    assert answer.status_code == 200 and answer.json()['account_username'] == 'alice'
    # A PIN is good for one use.
    again = call(fake, 'POST', 'oauth2/token', data=token_form(grant_type='pin', pin=pin))
    assert again.status_code == 400


def test_authorize_pin_flow_through_imgurpython(fake, imgurpython_api):
    client = ImgurClient(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
    page = requests.get(client.get_auth_url('pin'), timeout=TIMEOUT)
    pin = re.search(r'<code id="pin">(\w+)</code>', page.text).group(1)
    tokens = client.authorize(pin, 'pin')
    client.set_user_auth(tokens['access_token'], tokens['refresh_token'])
    assert client.get_account('me').url == 'alice'


def test_authorize_code_flow(fake):
    answer = call(fake, 'GET', 'oauth2/authorize', allow_redirects=False, params={
        'client_id': DEFAULT_CLIENT_ID, 'response_type': 'code'})
    assert answer.status_code == 302
    query = urllib.parse.urlsplit(answer.headers['Location']).query
    code = urllib.parse.parse_qs(query)['code'][0]
    tokens = call(fake, 'POST', 'oauth2/token', data=token_form(
        grant_type='authorization_code', code=code))
    assert tokens.status_code == 200 and tokens.json()['account_username'] == 'alice'


def test_authorize_error_1024(fake):
    fake.authorize_error = True
    for response_type in ('token', 'pin'):
        answer = call(fake, 'GET', 'oauth2/authorize', allow_redirects=False, params={
            'client_id': DEFAULT_CLIENT_ID, 'response_type': response_type})
        assert answer.status_code == 403
        assert 'Error 1024' in answer.text
        with pytest.raises(ValueError):
            answer.json()
    # The token endpoint keeps working.
    refresh = fake.issue_tokens()['refresh_token']
    assert call(fake, 'POST', 'oauth2/token', data=token_form(
        grant_type='refresh_token', refresh_token=refresh)).ok


# ---------------------------------------------------------------------------
# Faults and hook
# ---------------------------------------------------------------------------

def test_over_capacity_json_and_html(fake, alice):
    fake.add_fault('over_capacity', path='^/3/account')
    answer = call(fake, 'GET', '3/account/me', alice)
    assert answer.status_code == 403
    assert answer.json()['data']['error'] == (
        'Imgur is temporarily over capacity. Please try again later.')
    fake.add_fault('over_capacity', html=True)
    answer = call(fake, 'GET', '3/account/me', alice)
    assert answer.status_code == 403 and 'over capacity' in answer.text
    with pytest.raises(ValueError):
        answer.json()
    assert call(fake, 'GET', '3/account/me', alice).ok      # count=1 each


def test_html_error_page_is_not_json(fake, alice):
    fake.add_fault('html')
    answer = call(fake, 'GET', '3/account/me', alice)
    assert answer.status_code == 503 and 'text/html' in answer.headers['Content-Type']
    with pytest.raises(ValueError):
        answer.json()


def test_status_fault(fake, alice):
    fake.add_fault('status', method='POST', code=502)
    assert call(fake, 'GET', '3/account/me', alice).ok     # method does not match
    answer = call(fake, 'POST', '3/album', alice)
    assert answer.status_code == 502 and answer.json()['success'] is False
    assert fake.albums == {} and fake.credits_used == 1    # not acted, not charged
    fake.add_fault('status', code=500, html=True)
    answer = call(fake, 'POST', '3/album', alice)
    assert answer.status_code == 500 and answer.text.lstrip().startswith('<!DOCTYPE html>')


@pytest.mark.parametrize('kind, status, text', [
    ('too_fast', 400, 'Uploading file too fast!'),
    ('token_expired', 403, 'The access token provided is invalid.'),
    ('rate_limit', 429, 'more minutes'),
])
def test_refusal_faults(fake, alice, kind, status, text):
    fake.add_fault(kind, path=r'^/3/image$')
    answer = upload(fake, alice)
    assert answer.status_code == status and text in answer.json()['data']['error']
    assert 'X-RateLimit-UserRemaining' in answer.headers
    assert fake.images == {}
    assert upload(fake, alice).ok


def test_rate_limit_fault_follows_shape(fake, alice):
    fake.rate_limit_shape = 'errors'
    fake.add_fault('rate_limit', minutes=37)
    answer = call(fake, 'GET', '3/account/me', alice)
    assert answer.headers['Content-Type'] == 'application/vnd.imgur.v1+json'
    assert 'Please wait 37 more minutes' in answer.json()['errors'][0]['detail']


def test_fault_count_and_path(fake, alice):
    fault = fake.add_fault('status', path=r'/album', count=2)
    statuses = [call(fake, 'GET', '3/album/nope123', alice).status_code for _ in range(3)]
    assert statuses == [500, 500, 404]
    assert fault.fired == 2
    assert call(fake, 'GET', '3/account/me', alice).ok
    fake.add_fault('status', count=None)
    assert [call(fake, 'GET', '3/credits', ANON).status_code for _ in range(3)] == [500] * 3
    fake.clear_faults()
    assert call(fake, 'GET', '3/credits', ANON).ok


def test_hostile_answers_replace_the_answer_and_act_on_nothing(fake, alice):
    """The hostile-answer faults (not Imgur's documented behaviour: what a captive portal,
    a proxy or a broken server may send) answer without performing the request."""
    fake.add_fault('redirect', path=r'^/oauth2/token$', location='http://127.0.0.1:9/x')
    answer = requests.post(fake.url + 'oauth2/token', data=token_form(), timeout=TIMEOUT,
                           allow_redirects=False)
    assert (answer.status_code, answer.headers['Location']) == (307, 'http://127.0.0.1:9/x')
    fake.add_fault('answer', method='POST', path=r'^/3/image$', data={'id': None})
    assert upload(fake, alice).json() == {'data': {'id': None}, 'success': True,
                                          'status': 200}
    fake.add_fault('answer', path=r'^/3/account', raw=b'{"data": [1, 2]')
    assert call(fake, 'GET', '3/account/me', alice).content == b'{"data": [1, 2]'
    assert fake.images == {}


def test_huge_and_dribbling_answers_declare_their_length(fake, alice):
    fake.add_fault('huge', path=r'^/3/account', size=3 * 1024 * 1024)
    answer = call(fake, 'GET', '3/account/me', alice)
    assert len(answer.content) == int(answer.headers['Content-Length']) == 3 * 1024 * 1024
    fake.add_fault('dribble', path=r'^/3/account', interval=0.01, size=20)
    with requests.get(fake.url + '3/account/me', headers=alice, stream=True,
                      timeout=TIMEOUT) as answer:
        first = answer.raw.read(1)
        assert first == b' ' and answer.headers['Content-Length'] == '20'
    fake.add_fault('dribble', path=r'^/3/account', interval=0.01, size=20, headers=True)
    answer = call(fake, 'GET', '3/account/me', alice)
    assert answer.status_code == 200 and answer.headers['X-Dribble'] == 'x' * 20
    assert fake.images == {}


def test_drop_before_does_not_act(fake, alice):
    fake.add_fault('drop_before', method='POST', path=r'^/3/album$')
    with pytest.raises(requests.ConnectionError):
        call(fake, 'POST', '3/album', alice, data={'title': 'x'})
    assert fake.albums == {}
    assert fake.requests[-1].dropped and fake.requests[-1].status is None


def test_drop_after_acts(fake, alice):
    fake.add_fault('drop_after', method='POST', path=r'^/3/image$')
    with pytest.raises(requests.ConnectionError):
        upload(fake, alice, name='a.jpg')
    assert [image.name for image in fake.images.values()] == ['a.jpg']
    assert fake.requests[-1].dropped and fake.requests[-1].status == 200


def test_hook_sees_both_phases_and_can_drop(fake, alice):
    seen = []
    plan = {1: 'before', 2: 'after'}    # n-th request -> phase in which to drop it

    def hook(phase, request):
        seen.append((phase, request.status))
        if plan.get(len(fake.requests)) == phase:
            return 'drop'
        return None

    fake.on_request = hook
    with pytest.raises(requests.ConnectionError):
        call(fake, 'POST', '3/album', alice)
    assert len(fake.albums) == 0 and seen == [('before', None)]
    with pytest.raises(requests.ConnectionError):
        call(fake, 'POST', '3/album', alice)
    assert len(fake.albums) == 1 and seen[1:] == [('before', None), ('after', 200)]
    assert call(fake, 'POST', '3/album', alice).ok
    assert len(fake.albums) == 2 and seen[3:] == [('before', None), ('after', 200)]


def test_hook_runs_outside_the_lock(fake, alice):
    """A hook may call the fake (from another thread, too) without deadlocking."""
    def hook(phase, request):
        if phase == 'before':
            worker = threading.Thread(target=fake.create_album, args=('alice',))
            worker.start()
            worker.join(2)
            assert not worker.is_alive()

    fake.on_request = hook
    assert call(fake, 'GET', '3/account/me', alice).ok
    assert len(fake.albums) == 1 and not fake.errors


def test_stall_then_proceeds(fake, alice):
    fake.add_fault('stall', seconds=0.3)
    started = time.monotonic()
    answer = call(fake, 'POST', '3/album', alice)
    assert time.monotonic() - started >= 0.3
    assert answer.ok and len(fake.albums) == 1


def test_stall_longer_than_read_timeout(fake, alice):
    fake.add_fault('stall', seconds=0.5)
    with pytest.raises(requests.Timeout):
        requests.post(fake.url + '3/album', headers=alice, timeout=(2, 0.1))
    wait_until(lambda: len(fake.albums) == 1)   # the server went on and acted


def test_truncate_download(fake, alice):
    link = upload(fake, alice, make_jpeg(size=4000)).json()['data']['link']
    fake.add_fault('truncate', path=r'^/i/')
    with pytest.raises(requests.RequestException):
        requests.get(link, timeout=TIMEOUT).content
    assert len(requests.get(link, timeout=TIMEOUT).content) > 3000


def test_latency(fake, alice):
    fake.latency = 0.2
    started = time.monotonic()
    assert call(fake, 'GET', '3/account/me', alice).ok
    assert time.monotonic() - started >= 0.2


# ---------------------------------------------------------------------------
# Imgur since 2024-25, the default (the fake's docstring, "Album writes since December
# 2024", "Answers seen since 2024", "Privacy and stale reads", "Incomplete requests")
# ---------------------------------------------------------------------------

def test_defaults_are_imgur_today():
    fake = FakeImgur()
    assert (fake.album_form_bodies, fake.add_refuses_unowned,
            fake.legacy_delete_removes) == (False, True, False)
    assert fake.invalid_token_shape == 'envelope'
    assert (fake.album_account_url_null, fake.region_blocked, fake.image_links_html,
            fake.cdn_blocked) == (False, False, False, False)
    assert (fake.default_privacy, fake.ignore_create_privacy,
            fake.ignore_update_privacy, fake.stale_album_reads) == ('public', False, False, 0)
    assert fake.incomplete_requests == []


def test_request_records_its_body_type(fake, alice):
    album_id = fake.create_album('alice')
    call(fake, 'POST', f'3/album/{album_id}', alice, data={'title': 'm'})
    call(fake, 'POST', f'3/album/{album_id}', alice, json={'title': 'j'})
    call(fake, 'POST', f'3/album/{album_id}', alice, form=True, data={'title': 'f'})
    call(fake, 'DELETE', f'3/album/{album_id}', alice)
    assert [(r.body_type, r.status) for r in fake.api_requests()] == [
        ('multipart', 200), ('json', 200), ('form', 400), ('none', 200)]


def test_album_form_body_refusal_and_every_accepted_body(fake, alice):
    """Form bodies: 400 "Album fields must be sent as multipart/form-data or JSON"."""
    album_id = fake.create_album('alice')
    ids = [fake.create_image('alice', make_jpeg(seed=n)) for n in range(4)]
    answer = call(fake, 'PUT', f'3/album/{album_id}', alice, form=True, data={'title': 'x'})
    assert answer.status_code == 400
    assert answer.json()['data']['error'] == (
        'Album fields must be sent as multipart/form-data or JSON')
    answer = call(fake, 'POST', '3/album', alice, params={'title': 'in the query'})
    assert answer.status_code == 400 and len(fake.albums) == 1
    # multipart ids[] repeated, multipart ids comma-separated, JSON list
    assert call(fake, 'POST', f'3/album/{album_id}/add', alice,
                files=[('ids[]', (None, ids[0])), ('ids[]', (None, ids[1]))]).ok
    assert call(fake, 'POST', f'3/album/{album_id}/add', alice, data={'ids': ids[2]}).ok
    assert call(fake, 'POST', f'3/album/{album_id}/add', alice, json={'ids': [ids[3]]}).ok
    assert fake.album_image_ids(album_id) == ids
    assert call(fake, 'POST', f'3/album/{album_id}/remove_images', alice,
                json={'ids': ids[:2]}).ok
    assert fake.album_image_ids(album_id) == ids[2:]
    created = call(fake, 'POST', '3/album', alice, json={'title': 'J', 'ids': [ids[2]]})
    assert fake.album_image_ids(created.json()['data']['id']) == [ids[2]]


def test_delete_form_of_remove_images_removes_only_when_legacy(fake, alice):
    album_id = fake.create_album('alice')
    ids = [fake.create_image('alice', make_jpeg(seed=n), album=album_id) for n in range(2)]
    answer = call(fake, 'DELETE', f'3/album/{album_id}/remove_images', alice,
                  params={'ids': ids[0]})
    assert answer.json() == {'data': True, 'success': True, 'status': 200}
    assert fake.album_image_ids(album_id) == ids
    fake.legacy_delete_removes = True                   # Imgur before 2025
    call(fake, 'DELETE', f'3/album/{album_id}/remove_images', alice, params={'ids': ids[0]})
    assert fake.album_image_ids(album_id) == ids[1:]


def test_album_add_refusal_adds_none_of_the_ids(fake, alice):
    album_id = fake.create_album('alice')
    mine = [fake.create_image('alice', make_jpeg(seed=n)) for n in range(2)]
    answer = call(fake, 'POST', f'3/album/{album_id}/add', alice,
                  data={'ids[]': [mine[0], 'zzzzzzz', mine[1]]})
    assert answer.status_code == 403
    assert answer.json()['data']['error'] == (
        f'You must own all the image ids to add them to album {album_id}')
    assert fake.album_image_ids(album_id) == []
    fake.add_refuses_unowned = False
    call(fake, 'POST', f'3/album/{album_id}/add', alice,
         data={'ids[]': [mine[0], 'zzzzzzz', mine[1]]})
    assert fake.album_image_ids(album_id) == mine


def test_invalid_token_as_legacy_429_with_credits_left(fake):
    """PyImgur, March 2025 (the fake's docstring, "Answers seen since 2024")."""
    creds = fake.credentials()
    fake.expire_access_tokens()
    fake.invalid_token_shape = 'legacy429'
    answer = call(fake, 'GET', '3/account/me', bearer(creds['access_token']))
    assert answer.status_code == 429
    assert answer.headers['Content-Type'] == 'application/vnd.imgur.v1+json'
    body = answer.json()
    assert 'data' not in body
    error = body['errors'][0]
    assert (error['code'], error['status']) == ('429', 'Too Many Requests')
    assert error['detail']
    assert answer.headers['X-RateLimit-UserRemaining'] == '12500'       # cost nothing
    assert int(answer.headers['X-RateLimit-ClientRemaining']) > 0
    assert fake.credits_used == 0
    fake.add_fault('token_expired')             # the fault answers in the same shape
    fresh = bearer(fake.issue_tokens()['access_token'])
    assert call(fake, 'GET', '3/account/me', fresh).status_code == 429
    assert call(fake, 'GET', '3/account/me', fresh).ok
    fake.invalid_token_shape = 'envelope'
    answer = call(fake, 'GET', '3/account/me', bearer(creds['access_token']))
    assert answer.status_code == 403
    assert answer.json()['data']['error'] == 'The access token provided is invalid.'


def test_models_carry_account_id_and_account_url_may_be_null(fake, alice):
    alice_id = call(fake, 'GET', '3/account/me', alice).json()['data']['id']
    album_id = fake.create_album('alice', 'A')
    image_id = fake.create_image('alice', make_jpeg(), album=album_id)
    album = call(fake, 'GET', f'3/album/{album_id}', alice).json()['data']
    assert (album['account_url'], album['account_id']) == ('alice', alice_id)
    assert album['images'][0]['account_id'] == alice_id
    image = call(fake, 'GET', f'3/image/{image_id}', alice).json()['data']
    assert (image['account_url'], image['account_id']) == ('alice', alice_id)
    fake.album_account_url_null = True
    album = call(fake, 'GET', f'3/album/{album_id}', alice).json()['data']
    assert album['account_url'] is None and album['account_id'] == alice_id
    listed = call(fake, 'GET', '3/account/me/albums/0', alice).json()['data'][0]
    assert listed['account_url'] is None and listed['account_id'] == alice_id
    # Anonymous: no owner URL, account_id 0 (an unset field, not null).
    anonymous_album = fake.create_album(None)
    anonymous = call(fake, 'GET', f'3/album/{anonymous_album}', ANON).json()['data']
    assert (anonymous['account_url'], anonymous['account_id']) == (None, 0)
    anonymous_image = fake.create_image(None, make_jpeg(seed=2))
    image = call(fake, 'GET', f'3/image/{anonymous_image}', ANON).json()['data']
    assert (image['account_url'], image['account_id']) == (None, 0)


def test_token_answer_names_the_account(fake):
    refresh = fake.issue_tokens()['refresh_token']
    tokens = call(fake, 'POST', 'oauth2/token', data=token_form(
        grant_type='refresh_token', refresh_token=refresh)).json()
    me = call(fake, 'GET', '3/account/me', bearer(tokens['access_token'])).json()['data']
    assert (tokens['account_id'], tokens['account_username']) == (me['id'], 'alice')


def png_chunks(data: bytes) -> list:
    """(type, payload) of each chunk of a PNG, checking every CRC."""
    assert data.startswith(b'\x89PNG\r\n\x1a\n')
    chunks, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack('>I4s', data[pos:pos + 8])
        payload = data[pos + 8:pos + 8 + length]
        crc, = struct.unpack('>I', data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + payload) & 0xFFFFFFFF, kind
        chunks.append((kind, payload))
        pos += 12 + length
    assert pos == len(data)
    return chunks


def test_region_placeholder_is_a_336x478_png_of_34641_bytes():
    """The shape reported from blocked regions (the fake's docstring)."""
    assert len(REGION_PLACEHOLDER_PNG) == 34641
    chunks = png_chunks(REGION_PLACEHOLDER_PNG)
    assert chunks[0][0] == b'IHDR' and chunks[-1] == (b'IEND', b'')
    width, height, depth, colour = struct.unpack('>IIBB', chunks[0][1][:10])
    assert (width, height) == (336, 478)
    pixels = zlib.decompress(b''.join(p for kind, p in chunks if kind == b'IDAT'))
    assert len(pixels) == height * (1 + width * 3) and (depth, colour) == (8, 2)
    # Every other chunk is ancillary (lower-case first letter): decoders may skip it.
    assert all(kind[:1].islower() for kind, _ in chunks
               if kind not in (b'IHDR', b'IDAT', b'IEND'))


def test_region_blocked_links_answer_the_placeholder(fake, alice):
    image = upload(fake, alice, make_jpeg(seed=1)).json()['data']
    fake.region_blocked = True
    for link in (image['link'], f'{fake.url}i/gone123.jpg'):
        answer = requests.get(link, timeout=TIMEOUT, allow_redirects=False)
        assert answer.status_code == 200 and answer.headers['Content-Type'] == 'image/png'
        assert answer.content == REGION_PLACEHOLDER_PNG
    fake.region_blocked = False
    assert requests.get(image['link'], timeout=TIMEOUT).content == fake.image_bytes(
        image['id'])


def test_image_link_may_answer_a_web_page(fake, alice):
    link = upload(fake, alice).json()['data']['link']
    fake.image_links_html = True
    answer = requests.get(link, timeout=TIMEOUT)
    assert answer.status_code == 200 and 'text/html' in answer.headers['Content-Type']
    assert answer.content.lstrip().startswith(b'<!DOCTYPE html>')


def test_cdn_block_answers_every_api_call_forbidden(fake, alice):
    """ShareX #7910 and others, 2025 (the fake's docstring, "Answers seen since 2024")."""
    fake.cdn_blocked = True
    for method, path, kwargs in (('POST', '3/image', {'files': {'image': ('a.jpg',
                                                                          make_jpeg())}}),
                                 ('POST', '3/album', {'data': {'title': 'x'}}),
                                 ('GET', '3/account/me', {}), ('GET', '3/credits', {})):
        answer = call(fake, method, path, alice, **kwargs)
        assert answer.status_code == 400, path
        body = answer.json()
        assert body['success'] is False and body['status'] == 400
        assert body['data']['error'] == 'These actions are forbidden.'
        assert answer.headers['CDN-Error'] == 'yes'
        assert answer.headers['Retry-After'] == '0'
        assert answer.headers['Server'] == 'cat factory 1.0'
    assert fake.images == {} and fake.albums == {} and fake.credits_used == 0
    fake.cdn_blocked = False
    answer = call(fake, 'GET', '3/account/me', alice)
    assert answer.ok and 'CDN-Error' not in answer.headers
    assert answer.headers['Server'] != 'cat factory 1.0'


@pytest.mark.parametrize('code', [403, 500, 429])
def test_over_capacity_in_every_envelope(fake, alice, code):
    fake.add_fault('over_capacity', **({} if code == 403 else {'code': code}))
    answer = call(fake, 'POST', '3/album', alice, data={'title': 'x'})
    assert answer.status_code == code
    assert answer.json()['data']['error'] == (
        'Imgur is temporarily over capacity. Please try again later.')
    assert answer.json()['status'] == code and fake.albums == {}
    fake.add_fault('over_capacity', code=code, html=True)
    answer = call(fake, 'GET', '3/account/me', alice)
    assert answer.status_code == code and 'over capacity' in answer.text
    with pytest.raises(ValueError):
        answer.json()


def test_privacy_fields_may_be_ignored(fake, alice):
    created = call(fake, 'POST', '3/album', alice, data={'privacy': 'hidden'})
    album_id = created.json()['data']['id']
    assert fake.albums[album_id].privacy == 'hidden'
    fake.ignore_create_privacy = True
    ignored = call(fake, 'POST', '3/album', alice, data={'privacy': 'hidden'})
    assert fake.albums[ignored.json()['data']['id']].privacy == 'public'    # the default
    fake.default_privacy = 'secret'
    ignored = call(fake, 'POST', '3/album', alice, data={'privacy': 'hidden'})
    assert fake.albums[ignored.json()['data']['id']].privacy == 'secret'
    fake.ignore_update_privacy = True
    assert call(fake, 'POST', f'3/album/{album_id}', alice,
                data={'privacy': 'public', 'title': 'T'}).ok
    assert (fake.albums[album_id].privacy, fake.albums[album_id].title) == ('hidden', 'T')
    fake.ignore_update_privacy = False
    call(fake, 'POST', f'3/album/{album_id}', alice, data={'privacy': 'public'})
    assert fake.albums[album_id].privacy == 'public'


def test_stale_reads_right_after_a_write(fake, alice):
    """PyImgur's live tests pause 1-2 s after a write (the fake's docstring)."""
    fake.stale_album_reads = 2.0
    image_ids = [fake.create_image('alice', make_jpeg(seed=n)) for n in range(2)]
    created = call(fake, 'POST', '3/album', alice, data={'title': 'T', 'privacy': 'hidden',
                                                         'ids[]': image_ids[0]})
    album_id = created.json()['data']['id']

    def read():
        album = call(fake, 'GET', f'3/album/{album_id}', alice).json()['data']
        images = call(fake, 'GET', f'3/album/{album_id}/images', alice).json()['data']
        assert [i['id'] for i in album['images']] == [i['id'] for i in images]
        return album['title'], album['privacy'], [i['id'] for i in images]

    # A new album read at once: as created, nothing applied (the account's default).
    assert read() == (None, 'public', [])
    fake.advance(2)
    assert read() == ('T', 'hidden', image_ids[:1])
    call(fake, 'POST', f'3/album/{album_id}/add', alice, data={'ids[]': image_ids[1]})
    assert read() == ('T', 'hidden', image_ids[:1])         # before the add
    assert fake.album_image_ids(album_id) == image_ids      # the add was done
    fake.advance(1.5)
    assert read() == ('T', 'hidden', image_ids[:1])
    fake.advance(0.5)
    assert read() == ('T', 'hidden', image_ids)
    call(fake, 'PUT', f'3/album/{album_id}', alice, data={'privacy': 'public'})
    assert read()[1] == 'hidden'
    fake.stale_album_reads = 0                              # the default: always fresh
    assert read()[1] == 'public'


def raw_exchange(fake, head: bytes, body: bytes) -> bytes:
    """Send a request's head and (part of) its body, stop sending, read to the end."""
    with socket.create_connection(('127.0.0.1', int(fake.url.rsplit(':', 1)[1][:-1])),
                                  timeout=TIMEOUT) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)       # the client went away mid-body
        received = b''
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_a_body_cut_short_is_never_acted_on(fake, alice):
    """RFC 9112 section 8 (the fake's docstring, "Incomplete requests")."""
    album_id = fake.create_album('alice')
    prepared = requests.Request('POST', fake.url + '3/image', headers=alice, files={
        'image': ('a.jpg', make_jpeg(size=4000))}, data={'album': album_id}).prepare()
    head = (f'POST /3/image HTTP/1.1\r\nHost: 127.0.0.1\r\n'
            f'Authorization: {alice["Authorization"]}\r\n'
            f'Content-Type: {prepared.headers["Content-Type"]}\r\n'
            f'Content-Length: {len(prepared.body)}\r\n\r\n').encode()
    # Cut after the image part: what came would parse as a whole upload.
    cut = prepared.body.rindex(b'--', 0, len(prepared.body) - 10)
    assert raw_exchange(fake, head, prepared.body[:cut]) == b''      # no answer
    chunked = (b'POST /3/album HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: '
               + alice['Authorization'].encode() + b'\r\nContent-Type: application/json'
               b'\r\nTransfer-Encoding: chunked\r\n\r\n')
    assert raw_exchange(fake, chunked, b'e\r\n{"title": "x"}\r\n') == b''  # no last chunk
    assert raw_exchange(fake, chunked, b'40\r\n{"title": "x"}') == b''      # short chunk
    wait_until(lambda: len(fake.incomplete_requests) == 3)
    first = fake.incomplete_requests[0]
    assert (first.method, first.path, first.status) == ('POST', '/3/image', None)
    assert first.incomplete and first.dropped and first.body_bytes == prepared.body[:cut]
    assert fake.incomplete_requests[1].body_bytes == b'{"title": "x"}'
    assert fake.images == {} and len(fake.albums) == 1 and fake.credits_used == 0
    assert fake.requests == []
    # The same upload, whole, is done.
    assert raw_exchange(fake, head, prepared.body).startswith(b'HTTP/1.1 200')
    assert fake.album_image_ids(album_id) != []
    fake.reset_requests()
    assert fake.incomplete_requests == []


# ---------------------------------------------------------------------------
# HTTP behaviour, request log, standalone
# ---------------------------------------------------------------------------

def test_keep_alive_and_content_length(fake, alice):
    with requests.Session() as session:
        for _ in range(3):
            answer = session.get(fake.url + '3/account/me', headers=alice, timeout=TIMEOUT)
            assert answer.headers['Content-Length'] == str(len(answer.content))
        assert fake.connections == 1
        redirect = session.get(fake.url + 'i/gone123.jpg', allow_redirects=False,
                               timeout=TIMEOUT)
        assert redirect.headers['Content-Length'] == '0'
        assert fake.connections == 1


def test_parallel_uploads(fake, alice):
    album_id = fake.create_album('alice')
    results = []

    def worker(n):
        with requests.Session() as session:
            for k in range(5):
                answer = session.post(
                    fake.url + '3/image', headers=alice, timeout=TIMEOUT,
                    files={'image': (f'{n}-{k}.jpg', make_jpeg(seed=f'{n}-{k}'))},
                    data={'album': album_id})
                results.append(answer.status_code)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [200] * 20
    assert len(set(fake.album_image_ids(album_id))) == 20
    assert fake.credits_used == 200


def test_request_log(fake, alice):
    image_id = fake.create_image('alice', make_jpeg())
    call(fake, 'GET', f'3/image/{image_id}', ANON, params={'x': '1'})
    upload(fake, alice, name='n.jpg')
    requests.get(f'{fake.url}i/{image_id}.jpg', timeout=TIMEOUT)
    assert len(fake.requests) == 3 and len(fake.api_requests()) == 2
    first, second = fake.api_requests()
    assert (first.method, first.path, first.query, first.status, first.auth) == (
        'GET', f'/3/image/{image_id}', {'x': ['1']}, 200, 'client-id')
    assert second.auth == 'bearer' and second.account == 'alice'
    assert second.form['name'] == ['n.jpg'] and second.files['image'][0] == 'photo.jpg'
    assert second.body_bytes and 'multipart/form-data' in second.headers['Content-Type']
    assert fake.requests[2].auth is None
    fake.reset_requests()
    assert fake.requests == [] and fake.credits_used == 11


def test_standalone(tmp_path):
    script = Path(__file__).with_name('fake_imgur.py')
    process = subprocess.Popen(
        [sys.executable, str(script), '--port', '0', '--home', str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_sigint if os.name == 'posix' else None)
    try:
        lines = []
        while not lines or lines[-1].rstrip() != '}':
            line = process.stdout.readline()
            assert line, process.stderr.read()
            lines.append(line)
        url = re.match(r'Fake Imgur listening at (http://127\.0\.0\.1:\d+/)$',
                       lines[0].strip()).group(1)
        assert lines[1].strip() == f'export IMGUR_API_URL={url}'
        printed = json.loads(''.join(lines[lines.index('{\n'):]))
        path = tmp_path / 'credentials.json'
        assert json.loads(path.read_text()) == printed
        if os.name == 'posix':
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert {'client_id', 'client_secret', 'access_token', 'refresh_token'} <= set(printed)
        answer = requests.get(url + '3/account/me', timeout=TIMEOUT,
                              headers=bearer(printed['access_token']))
        assert answer.json()['data']['url'] == printed['account_username']
    finally:
        if os.name == 'posix':
            process.send_signal(signal.SIGINT)      # Ctrl-C ends it cleanly
        else:
            process.terminate()
        try:
            code = process.wait(10)
        finally:
            process.kill()
            process.stdout.close()
            process.stderr.close()
    assert code == 0 or os.name != 'posix'


def test_fixture_home(home, fake):
    """The conftest Home helper does what tests/INTERFACES.md says."""
    home.write_albums('a\r\nb\n')
    assert home.albums_bytes() == b'a\r\nb\n'
    creds = home.write_credentials()
    assert json.loads((home.path / 'credentials.json').read_text()) == creds
    assert home.state() is None
    folder = home.folder('Trip', {'a.jpg': b'x'})
    assert folder == home.photos / 'Trip' and (folder / 'a.jpg').read_bytes() == b'x'
    env = home.env({'NO_COLOR': None, 'X_TEST': '1'})
    assert env['IMGUR_API_URL'] == fake.url and env['IMGURBOX_BACKOFF_SCALE'] == '0.01'
    assert 'NO_COLOR' not in env and env['X_TEST'] == '1'
