"""A real softphone (baresip) calls the local SIP endpoint, hears its own voice echoed, and follows a transfer.

Needs real servers: `manage.py serve` with the embedded engine, `baresip` (aufile plays a WAV as the
microphone, sndfile records what it hears) and `sipp` as the transfer target. baresip exits 0
even when a call fails, so every test reads its output and its recordings.
"""

from __future__ import annotations

import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from realtime.models import Call, SipRoute
from tests.conftest import Server
from tests.sip_tools import finish, free_port, sip_server, wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]

RATE = 8000
FRAME = 160  # 20 ms at 8 kHz
LOUD = 0.05


@pytest.fixture(scope="module")
def sip(tmp_path_factory: pytest.TempPathFactory, django_db_setup: None) -> Iterator[tuple[Server, int]]:
    with sip_server(tmp_path_factory.mktemp("sip-server")) as running:
        yield running


@pytest.fixture(autouse=True)
def routes() -> None:
    SipRoute.objects.all().delete()
    SipRoute.objects.create(name="Answer", position=1)


def _voice(path: Path, *, bursts: int) -> None:
    """A voice stand-in: 0.8 s of tone, 0.8 s of silence, `bursts` times (8 kHz mono 16-bit)."""
    t = np.arange(int(RATE * 0.8)) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    signal = np.concatenate([tone, np.zeros_like(tone)] * bursts)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(signal.tobytes())


def _loud_frames(path: Path) -> int:
    with wave.open(str(path)) as recording:
        samples = np.frombuffer(recording.readframes(recording.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    frames = samples[: len(samples) // FRAME * FRAME].reshape(-1, FRAME)
    return int((np.sqrt((frames * frames).mean(axis=1)) >= LOUD).sum())


def _baresip(home: Path, sip_port: int, *, seconds: int) -> subprocess.Popen[bytes]:
    """baresip with a config dir of its own, loopback only, dialling the engine's project URI."""
    home.mkdir()
    _voice(home / "voice.wav", bursts=4)
    rtp = free_port(span=20)
    # baresip listens on this port over UDP and TCP, and over TLS on the next one: both must be free.
    sip = free_port(span=2)
    (home / "config").write_text(
        "\n".join(
            [
                "poll_method epoll",
                f"sip_listen 127.0.0.1:{sip}",
                "net_interface 127.0.0.1",
                f"rtp_ports {rtp}-{rtp + 19}",
                f"audio_source aufile,{home / 'voice.wav'}",
                f"audio_player aufile,{home / 'unused.wav'}",
                f"audio_alert aufile,{home / 'unused.wav'}",
                "module_path /usr/lib/baresip/modules",
                "module g711.so",
                "module aufile.so",
                "module sndfile.so",
                "module_app account.so",
                "module_app menu.so",
                f"snd_path {home}",
            ]
        )
        + "\n"
    )
    (home / "accounts").write_text("<sip:tester@127.0.0.1>;regint=0\n")
    command = ["baresip", "-f", str(home), "-e", f"/dial sip:proj_local@127.0.0.1:{sip_port}", "-t", str(seconds)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _output(process: subprocess.Popen[bytes]) -> str:
    output, _ = process.communicate(timeout=60)
    # Drop the status line baresip redraws many times a second.
    return "\n".join(line for line in output.decode(errors="replace").splitlines() if "audio=" not in line)


def _recordings(home: Path, kind: str) -> list[Path]:
    return sorted(home.glob(f"dump-*-{kind}.wav"))


def test_it_answers_baresip_which_hears_its_own_voice_echoed(sip: Any, tmp_path: Path):
    _server, port = sip
    home = tmp_path / "baresip"
    output = _output(_baresip(home, port, seconds=15))

    assert "Call established: sip:proj_local@" in output, output
    assert "terminated" in output, output
    sent, heard = _recordings(home, "enc"), _recordings(home, "dec")
    assert len(sent) == len(heard) == 1, output
    # What it heard is what it said: as many loud 20 ms frames (the echo), not silence.
    spoken, echoed = _loud_frames(sent[0]), _loud_frames(heard[0])
    assert spoken >= 100 and echoed >= 0.9 * spoken, (spoken, echoed)
    call = wait_for(lambda: Call.objects.filter(source=Call.Source.SIP, status=Call.Status.ENDED).first())
    assert (call.sip_caller, call.end_reason) == ("tester", Call.EndReason.REMOTE_HANGUP)
    assert call.events.filter(event_type="input_audio_buffer.speech_stopped").count() >= 2


def test_it_transfers_baresip_to_another_sip_agent(sip: Any, tmp_path: Path):
    server, port = sip
    desk_port = free_port()
    desk_dir = tmp_path / "desk"
    desk_dir.mkdir()
    desk = subprocess.Popen(
        [
            "sipp",
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            str(desk_port),
            "-mp",
            str(free_port(span=4)),
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "40s",
            "-timeout_error",
            "-trace_err",
        ],
        cwd=desk_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    phone = _baresip(tmp_path / "baresip", port, seconds=20)
    call = wait_for(lambda: Call.objects.filter(source=Call.Source.SIP, status=Call.Status.ACTIVE).first())
    target = f"sip:desk@127.0.0.1:{desk_port}"
    response = httpx.post(f"{server.url}/api/realtime/calls/{call.call_id}/transfer", json={"target_uri": target}, timeout=10)
    assert response.status_code == 200, response.text

    output = _output(phone)
    code, desk_output = finish(desk, desk_dir)
    # The desk (SIPp's answering agent) took the call and saw it end normally.
    assert code == 0, desk_output
    assert f"Call established: {target}" in output, output
    call.refresh_from_db()
    assert call.status == Call.Status.ENDED and call.transferred_to == target
    assert list(call.events.filter(event_type="call.transferred").values_list("data__target_uri", flat=True)) == [target]
