from appliance.http.ratelimit import MAX_CLIENTS, RateLimiter


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_the_rate() -> None:
    clock = Clock()
    limit = RateLimiter(per_minute=6, burst=2, clock=clock)  # one every 10 s
    assert limit.take("a") == 0 and limit.take("a") == 0
    assert limit.take("a") == 10.0
    assert limit.take("b") == 0  # another client has its own bucket
    clock.now = 5
    assert limit.take("a") == 5.0
    clock.now = 10
    assert limit.take("a") == 0
    assert limit.take("a") == 10.0


def test_idle_clients_are_forgotten() -> None:
    clock = Clock()
    limit = RateLimiter(per_minute=60, burst=2, clock=clock)
    for i in range(MAX_CLIENTS):
        limit.take(f"10.0.{i // 256}.{i % 256}")
    clock.now = 60
    limit.take("late")
    assert len(limit._buckets) == 1  # only the client seen just now is left
