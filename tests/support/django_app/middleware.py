from __future__ import annotations

from shipper.integrations.django import ShipperMiddleware


class SteppingClock:
    """Each call advances by ``step`` seconds."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class SlowClockMiddleware(ShipperMiddleware):
    """Every request takes 1.5 s by this clock."""

    clock = SteppingClock(1.5)


class FastClockMiddleware(ShipperMiddleware):
    """Every request takes 10 ms by this clock."""

    clock = SteppingClock(0.01)
