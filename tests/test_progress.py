"""core.progress: --quiet prints nothing; a non-terminal stream gets one line per bar, not a redraw per step."""
import io

from core.progress import StageLine, bar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_non_terminal_bar_writes_one_line():
    out = io.StringIO()
    b = bar(total=100, desc="epoch 1/3", enabled=True, stream=out, leave=False)
    assert isinstance(b, StageLine)
    for _ in range(100):
        b.update()
    b.set_postfix(ce="1.234")
    b.close()
    b.close()                                   # a second close writes nothing more
    text = out.getvalue()
    assert "\r" not in text and text.count("\n") == 1
    assert text.startswith("epoch 1/3: 100/100 it in ") and text.endswith(", ce=1.234\n")


def test_non_terminal_iteration_counts_and_closes():
    out = io.StringIO()
    assert list(bar(range(100), desc="decoding", unit="frame", stream=out)) == list(range(100))
    assert out.getvalue().startswith("decoding: 100/100 frame in ") and out.getvalue().count("\n") == 1


def test_quiet_writes_nothing_on_any_stream():
    for out in (io.StringIO(), _Tty()):
        with bar(total=100, desc="synthetic", enabled=False, stream=out) as b:
            for _ in range(100):
                b.update()
        assert list(bar(range(5), desc="x", enabled=False, stream=out)) == list(range(5))
        assert out.getvalue() == ""


def test_terminal_gets_a_live_bar():
    out = _Tty()
    for _ in bar(range(100), desc="extract", stream=out, mininterval=0):
        pass
    live = bar(range(1), stream=out)
    live.close()
    assert not isinstance(live, StageLine) and "\r" in out.getvalue()
