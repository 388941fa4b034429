"""Every state change on disk is ordered so that no crash point re-sends a
recipient logged as sent.  What a crash can leave behind, made by hand here
and then recovered by a real start:

- `krelay queue hold|release` moves a message's state file first, then the
  message: a crash between the renames leaves the state file in the other
  directory, and recovery puts it back beside its message (before, the
  state file was removed as an orphan and the message went out again to
  every recipient, those logged as sent included);
- a state file whose message is gone (a removal cut short after queue/ID
  went) is removed.
"""
import shutil

import pytest

from helpers import wait_for
from test_queue_routing import queue_list
from test_relay import (BIG, content_of, env_states, queued_ids, submit, wait_peer,
                        wait_spool_empty)


@pytest.mark.parametrize("where", ["queue", "hold"])
def test_state_file_cut_off_by_a_move_goes_back_to_its_message(relay_factory, where):
    # the next hop takes one recipient per transaction: the second waits
    peer = relay_factory(f"MaxRecipients=1\nDeliveryMode=queueonly\n{BIG}", tls=False)
    relay = relay_factory(f"SmartHost=[127.0.0.1]:{peer.port}\nTLSPolicy=none\n"
                          "RetrySchedule=1h\n")
    qid = submit(relay.port, "s@example.org", ["a@example.com", "b@example.com"],
                 content_of(f"crash-move-{where}"))
    wait_for(lambda: env_states(relay, qid) == {"a@example.com": "D", "b@example.com": "P"},
             20, "queue/ID.env with a delivered and a pending recipient")
    wait_peer(peer, 1)
    relay.stop()
    # the crash: the state file moved, the message not (hold: queue -> hold;
    # release: hold -> queue, with the message in hold/)
    q, h = relay.queue / "queue", relay.queue / "hold"
    h.mkdir(exist_ok=True)
    if where == "queue":
        shutil.move(q / f"{qid}.env", h / f"{qid}.env")
    else:
        shutil.move(q / qid, h / qid)
    peer_before = len(peer.queued())
    relay.start()
    if where == "hold":
        # held: not tried; its state is back beside it
        msgs, _ = queue_list(relay)
        assert msgs[qid]["held"], msgs[qid]
        assert msgs[qid]["rcpts"] == [("a@example.com", "delivered"),
                                      ("b@example.com", "pending")], msgs[qid]
        return
    # tried at start: only b goes
    wait_spool_empty(relay, timeout=30)
    wait_peer(peer, peer_before + 1)
    rcpts = sorted(r for name in peer.queued() for _, r in peer.message(name)[1]["rcpt"])
    assert rcpts == ["a@example.com", "b@example.com"], rcpts


def test_state_file_without_its_message_is_removed(relay_factory):
    relay = relay_factory()
    qid = "0D0000000000ABCD"
    relay.stop()
    (relay.queue / "queue" / f"{qid}.env").write_text("krelay-envelope 1\nend\n")
    relay.start()
    assert not (relay.queue / "queue" / f"{qid}.env").exists()
    assert queued_ids(relay) == []
