"""The dashboard of a budget that three simulated tenants spend from.

    pip install 'treasurer[dashboard]'
    python examples/dashboard.py          # then open http://127.0.0.1:8050/

The budget's clock runs sixty times faster than the wall clock (a minute a
second), so forecasts and alerts show up within a few seconds. Ctrl-C stops it.
"""

from __future__ import annotations

import random
import sys
from datetime import UTC, datetime, timedelta

import anyio

import treasurer
import treasurer.dashboard
import treasurer.forecast
from treasurer.testing import ManualClock

MODELS = {  # USD per 1,000 input and output tokens
    "gpt-4o": (0.0025, 0.01),
    "gpt-4o-mini": (0.00015, 0.0006),
    "claude-sonnet-4": (0.003, 0.015),
}


async def spend(budget: treasurer.Budget, tenant: str, pace: float) -> None:
    rng = random.Random(tenant)
    while True:
        model = rng.choice(list(MODELS))
        inputs, outputs = rng.randint(500, 3000), rng.randint(100, 900)
        price_in, price_out = MODELS[model]
        usd = round((inputs * price_in + outputs * price_out) / 1000, 6)
        try:
            async with budget.tenant(tenant).reserve(
                input_tokens=inputs, output_tokens=outputs, usd=usd, requests=1, model=model
            ) as reservation:
                reservation.commit()  # as estimated
        except treasurer.BudgetExceeded:
            pass  # refused: the dashboard lists it
        await anyio.sleep(pace * rng.uniform(0.5, 1.5))


async def main(port: int) -> None:
    clock = ManualClock(datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30))
    async with (
        treasurer.open_budget(
            name="support-bot",
            usd=50,
            windows=[treasurer.Window.day(usd=20), treasurer.Window.hour(tokens=400_000)],
            tenant_defaults=treasurer.TenantCaps(
                usd=8, windows=[treasurer.Window.hour(requests=200)]
            ),
            thresholds=(50, 75, 90, 100),
            forecast=treasurer.forecast.ForecastOptions(warmup=timedelta(minutes=5)),
            usage_log=treasurer.MemoryUsageLog(),
            clock=clock,
        ) as budget,
        anyio.create_task_group() as tasks,
    ):
        url = await tasks.start(
            lambda task_status: treasurer.dashboard.serve(
                budget, port=port, task_status=task_status
            )
        )
        print(f"dashboard on {url} (Ctrl-C stops it)", flush=True)
        for tenant, pace in (("acme", 0.2), ("globex", 0.5), ("initech", 1.0)):
            tasks.start_soon(spend, budget, tenant, pace)
        while True:  # a minute of budget time per second
            await anyio.sleep(1)
            clock.advance(minutes=1)


if __name__ == "__main__":
    try:
        anyio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 8050)
    except KeyboardInterrupt:
        pass
