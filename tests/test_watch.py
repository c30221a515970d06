"""`watch`: the real script left running against the fake, changed under it as a user
would. Every wait polls the fake's record of requests (or the files) with a generous
deadline; nothing asserts on how long anything took."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import time

import pytest

from imagefiles import jpeg
from mirror_check import album_adds, album_removes, assert_mirror, done_uploads, uploads

QUIET = '0.4'
DEADLINE = 60.0


def wait_for(condition, what: str, process=None):
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f'watch exited {process.returncode} while waiting for '
                                 f'{what}\n{out.decode()}\n{err.decode()}')
        assert time.monotonic() < deadline, f'no {what} within {DEADLINE} s'
        time.sleep(0.05)


def stop(process, sig=signal.SIGTERM) -> tuple:
    process.send_signal(sig)
    out, err = process.communicate(timeout=60)
    return process.returncode, out.decode(), err.decode()


def cats_listed(home):
    """A folder Cats holding a.jpg, the only line of albums.txt; credentials in place."""
    folder = home.folder('Cats', {'a.jpg': jpeg(1)})
    home.write_credentials()
    home.write_albums(f'{folder}\n')
    return folder


@pytest.fixture
def watching(home, fake):
    """Start `watch` on what albums.txt lists; stopped (SIGTERM) at the end if still up."""
    started = []

    def start(*args, quiet=QUIET):
        process = home.start('watch', '--quiet-seconds', quiet, *args)
        started.append(process)
        return process
    yield start
    for process in started:
        if process.poll() is None:
            stop(process)


def test_a_new_file_is_uploaded_and_sigterm_exits_143_with_state_saved(home, fake, watching):
    folder = cats_listed(home)
    process = watching()
    wait_for(lambda: len(done_uploads(fake)) == 1, 'first sync', process)
    (folder / 'b.jpg').write_bytes(jpeg(2))
    wait_for(lambda: len(done_uploads(fake)) == 2, 'upload of the new file', process)
    fake.wait_idle()
    code, out, err = stop(process)
    assert code == 143, (out, err)
    assert 'Traceback' not in err
    assert_mirror(home, fake, [folder])
    assert home.run('sync').code == 0
    assert len(uploads(fake)) == 2


def test_a_file_written_slowly_in_pieces_is_uploaded_once_whole(home, fake, watching):
    folder = cats_listed(home)
    process = watching()
    wait_for(lambda: len(done_uploads(fake)) == 1, 'first sync', process)
    whole = jpeg(7) + b'\0' * 200_000               # a large photo, copied slowly
    with open(folder / 'slow.jpg', 'wb') as f:
        for start in range(0, len(whole), len(whole) // 8):
            f.write(whole[start:start + len(whole) // 8])
            f.flush()
            time.sleep(0.1)                         # well inside the quiet time
    wait_for(lambda: len(done_uploads(fake)) == 2, 'upload of the slow file', process)
    fake.wait_idle()
    stop(process)
    slow = [q for q in uploads(fake) if q.value('name') == 'slow.jpg']
    assert len(slow) == 1
    assert slow[0].files['image'][1] == whole
    assert_mirror(home, fake, [folder])


def test_a_move_between_folders_is_one_move(home, fake, watching):
    cats = home.folder('Cats', {'a.jpg': jpeg(1)})
    dogs = home.folder('Dogs', {'d.jpg': jpeg(2)})
    home.write_credentials()
    home.write_albums(f'{cats}\n{dogs}\n')
    process = watching()
    wait_for(lambda: len(done_uploads(fake)) == 2, 'first sync', process)
    os.replace(cats / 'a.jpg', dogs / 'a.jpg')
    wait_for(lambda: album_removes(fake), 'the move', process)
    fake.wait_idle()
    stop(process)
    assert len(uploads(fake)) == 2 and len(album_adds(fake)) == 1
    assert_mirror(home, fake, [cats, dogs])


def test_a_burst_of_files_is_one_sync(home, fake, watching):
    folder = cats_listed(home)
    process = watching(quiet='3')       # a burst is quick; a loaded machine is not
    wait_for(lambda: len(done_uploads(fake)) == 1, 'first sync', process)
    # Written before a run's first write (state.json only when the run ends, which may
    # not have come yet): the first sync's number, as soon as its upload is in.
    runs_before = int((home.path / 'run-counter').read_text())
    staging = home.photos / 'staging'           # written outside, then moved in at once
    staging.mkdir()
    for n in range(30):
        (staging / f'b{n:02d}.jpg').write_bytes(jpeg(100 + n))
    for n in range(30):
        os.replace(staging / f'b{n:02d}.jpg', folder / f'b{n:02d}.jpg')
    wait_for(lambda: len(done_uploads(fake)) == 31, 'the burst', process)
    fake.wait_idle()
    stop(process)
    # The run number goes up once per run that writes to Imgur: one run took them all.
    assert int((home.path / 'run-counter').read_text()) == runs_before + 1
    assert_mirror(home, fake, [folder])


def test_a_rate_limit_makes_it_sleep_then_carry_on(home, fake, watching):
    fake.hour = 3                                   # the fake's hour: 3 seconds
    folder = home.folder('Cats', {'a.jpg': jpeg(1), 'b.jpg': jpeg(2)})
    home.write_credentials()
    home.write_albums(f'{folder}\n')
    fake.add_fault('rate_limit', method='POST', path=r'^/3/image$', count=1)
    process = watching('--jobs', '1')
    wait_for(lambda: len(done_uploads(fake)) == 2, 'uploads after the reset', process)
    fake.wait_idle()
    code, out, err = stop(process)
    assert code == 143
    assert 'rate limit: sleeping' in out + err
    assert_mirror(home, fake, [folder])


def test_albums_txt_changes_are_picked_up(home, fake, watching):
    cats = cats_listed(home)
    process = watching()
    wait_for(lambda: len(done_uploads(fake)) == 1, 'first sync', process)
    dogs = home.folder('Dogs', {'d.jpg': jpeg(2)})
    home.write_albums(f'{cats}\n{dogs}\n')
    wait_for(lambda: len(done_uploads(fake)) == 2, 'the new line', process)
    (dogs / 'e.jpg').write_bytes(jpeg(3))           # and its folder is watched now
    wait_for(lambda: len(done_uploads(fake)) == 3, 'a file in the new folder', process)
    fake.wait_idle()
    stop(process)
    assert_mirror(home, fake, [cats, dogs])


def test_a_folder_that_goes_away_and_comes_back_is_watched_again(home, fake, watching):
    # A drive unplugged and plugged in again: the syncs in between fail that folder (and
    # are retried with backoff); once it is back, its changes sync again, no restart.
    folder = cats_listed(home)
    process = watching()
    wait_for(lambda: len(done_uploads(fake)) == 1, 'first sync', process)
    away = folder.with_name('Cats.unplugged')
    folder.rename(away)
    log = home.path / 'log.txt'
    wait_for(lambda: 'folder not found' in log.read_text(), 'a sync to miss it', process)
    away.rename(folder)
    (folder / 'b.jpg').write_bytes(jpeg(2))
    wait_for(lambda: len(done_uploads(fake)) == 2, 'the file added once it was back',
             process)
    (folder / 'c.jpg').write_bytes(jpeg(3))         # and it is watched again
    wait_for(lambda: len(done_uploads(fake)) == 3, 'a later file', process)
    fake.wait_idle()
    code, out, err = stop(process)
    assert code == 143, (out, err)
    assert 'Traceback' not in err
    assert_mirror(home, fake, [folder])


def test_sigterm_just_after_a_sync_ends_it_every_time(home, fake, watching):
    # Between syncs watch reads albums.txt and the state again (which folders to watch);
    # a SIGTERM that came then was once swallowed there, and watch ran on.
    # The signal is sent as soon as the log shows the sync done, so that it lands while
    # that look (tens of milliseconds for 1,500 files) is under way.
    files = {f'p{i:04d}.jpg': jpeg(i) for i in range(1500)}
    album = fake.create_album('alice', title='Cats')
    for name, data in files.items():                # adopted by name: no upload
        fake.create_image('alice', data, name=name, album=album)
    folder = home.folder('Cats', files)
    home.write_credentials()
    home.write_albums(f'{folder} -> https://imgur.com/a/{album}\n')
    assert home.run('sync', timeout=300).code == 0
    log = home.path / 'log.txt'
    for attempt in range(4):
        done = log.read_text().count('nothing to do')
        process = watching(quiet='0')
        deadline = time.monotonic() + DEADLINE
        while log.read_text().count('nothing to do') == done:
            assert time.monotonic() < deadline and process.poll() is None, 'no sync'
            time.sleep(0.002)
        code, out, err = stop(process)
        assert code == 143, (attempt, out, err)


def test_it_sleeps_while_a_change_settles_instead_of_spinning(home, fake, watching):
    folder = cats_listed(home)
    process = watching(quiet='6')
    wait_for(lambda: len(done_uploads(fake)) == 1, 'first sync', process)
    before = cpu_seconds(process)
    (folder / 'b.jpg').write_bytes(jpeg(2))         # then 6 s of quiet before its sync
    wait_for(lambda: len(done_uploads(fake)) == 2, 'the upload after the quiet time',
             process)
    used = cpu_seconds(process) - before
    # One small sync costs a few hundredths of a second; a loop that spun through the
    # quiet time used whole seconds, even on a loaded machine.
    assert used < 1.0, f'{used:.2f} s of CPU while waiting out 6 s of quiet'
    stop(process)


def cpu_seconds(process) -> float:
    with open(f'/proc/{process.pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def test_a_taken_lock_is_waited_for_not_fought(home, fake, watching):
    cats_listed(home)
    with open(home.path / 'imgurbox.lock', 'a+') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)            # a scheduled --verify run, say
        process = watching()
        log = home.path / 'log.txt'
        wait_for(lambda: log.exists() and 'waiting for another run' in log.read_text(),
                 'watch to wait for the lock', process)
        assert uploads(fake) == []
        fcntl.flock(lock, fcntl.LOCK_UN)
    wait_for(lambda: len(done_uploads(fake)) == 1, 'the sync after the lock', process)
    fake.wait_idle()
    code, out, err = stop(process)
    assert code == 143
    assert 'waiting for it to end' in out + err


def test_ctrl_c_exits_130_and_a_bad_albums_txt_stops_it_with_2(home, fake, watching):
    folder = cats_listed(home)
    process = watching()
    wait_for(lambda: len(done_uploads(fake)) == 1, 'first sync', process)
    fake.wait_idle()
    code, out, err = stop(process, signal.SIGINT)
    assert code == 130, (out, err)
    home.write_albums(f'{folder}\n{home.photos / "Nowhere" / "deeper"}\n')
    process = watching()
    assert process.wait(timeout=60) == 2
    err = process.stderr.read().decode()
    # As a sync says it: the bad line on a line of its own, under the message.
    assert re.search(r'^error: .*albums\.txt has 1 bad line.*\n  albums\.txt:2: ', err,
                     re.MULTILINE), err


def test_watch_takes_no_sync_only_option(home):
    r = home.run('watch', '--verify')
    assert r.code == 2 and '--verify' in r.stderr
