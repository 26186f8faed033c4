"""harness.guest.kmsg: the one /dev/kmsg reader of the guest side, fed scripted reads."""

import errno

import pytest

from harness.guest import kmsg


def _reads(monkeypatch, script):
    """os.read in kmsg returns (or raises) the script's items in turn, then EAGAIN."""
    items = iter(script)

    def read(fd, n):
        item = next(items, BlockingIOError())
        if isinstance(item, BaseException):
            raise item
        return item
    monkeypatch.setattr(kmsg.os, "read", read)


def test_records_are_their_message_text_and_an_overwritten_record_is_skipped(monkeypatch):
    _reads(monkeypatch, [b"6,1,10,-;kvm [1]: VHE mode initialized\n",
                         OSError(errno.EPIPE, "overwritten"),
                         b"4,2,20,-;WARNING: at x\n SUBSYSTEM=cpu\n DEVICE=+cpu:1\n"])
    assert kmsg.read_records(3) == ["kvm [1]: VHE mode initialized", "WARNING: at x"]


def test_another_error_ends_the_read_with_what_was_read(monkeypatch):
    _reads(monkeypatch, [b"6,1,10,-;first\n", OSError(errno.EINVAL, "too long"), b"6,2,0,-;no\n"])
    assert kmsg.read_records(3) == ["first"]


def test_the_read_is_bounded_even_when_records_keep_coming(monkeypatch):
    monkeypatch.setattr(kmsg.os, "read", lambda fd, n: b"6,1,0,-;again\n")
    assert len(kmsg.read_records(3, max_reads=50)) == 50
    monkeypatch.setattr(kmsg.os, "read", lambda fd, n: (_ for _ in ()).throw(
        OSError(errno.EPIPE, "overwritten")))
    assert kmsg.read_records(3, max_reads=50) == []


def test_no_readable_kmsg_is_an_empty_log(tmp_path):
    assert kmsg.log(str(tmp_path / "absent")) == []
    with pytest.raises(OSError), kmsg.opened(path=str(tmp_path / "absent")):
        pass
