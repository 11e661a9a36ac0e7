"""The support dashboard (`/admin/dashboard/`): figures over a period, read from counters only.

Every figure comes from the hourly counters (`CallBucket`, kept by `services` in the same
transaction as each transition), the live counters (`CallCounter`) and one bounded index read for
the slowest calls, so the page costs the same with a thousand calls or a million: a month is at
most 24 x 31 rows per series. Hours are UTC in the database and shown in the current time zone;
a day is the local calendar day, made of the hours that fall in it.

The p95 duration is read from the duration histogram (`counters.DURATION_EDGES`), interpolated
linearly inside the bucket it falls in: it is exact to within that bucket's width (5 s for short
calls, a few minutes for the longest). Turn latency p50 and p95 per model are read the same way
from the hourly latency histograms (`quality.LATENCY_EDGES_MS`: within 100 ms up to a second).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from html import escape
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Case, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import formats, timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext_lazy as _

from . import counters, quality
from .models import Call, CallBucket, CallCounter

# Longest custom period: a month of hours (744 rows per series). At a million calls, three months
# of hourly rows (63,000) take ~500 ms to sum on a busy 2-core machine (docs/benchmarks.md).
MAX_DAYS = 31
# End reasons that mean the caller did not get the conversation they called for.
FAILURE_REASONS = (
    Call.EndReason.UPSTREAM_ERROR,
    Call.EndReason.SETUP_TIMEOUT,
    Call.EndReason.LOST,
    Call.EndReason.REJECTED,
    Call.EndReason.MISSED,
)
SLOWEST = 10


class PeriodForm(forms.Form):
    PERIODS = [("today", _("Today")), ("7d", _("Last 7 days")), ("30d", _("Last 30 days")), ("custom", _("Custom dates"))]

    period = forms.ChoiceField(label=_("Period"), choices=PERIODS, required=False)
    start = forms.DateField(label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label=_("To"), required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("period") == "custom":
            start, end = data.get("start"), data.get("end")
            if start is None or end is None:
                raise forms.ValidationError(_("Give both dates of a custom period."))
            if end < start:
                raise forms.ValidationError(_("The period ends before it starts."))
            if (end - start).days + 1 > MAX_DAYS:
                raise forms.ValidationError(_("A period covers at most %(days)d days.") % {"days": MAX_DAYS})
        return data


@dataclass(frozen=True)
class Period:
    first: date  # local calendar days, both included
    last: date
    tz: tzinfo

    def start_of(self, day: date) -> datetime:
        return datetime.combine(day, time(), self.tz)

    @property
    def start(self) -> datetime:
        return self.start_of(self.first)

    @property
    def end(self) -> datetime:
        return self.start_of(self.last + timedelta(days=1))

    @property
    def days(self) -> list[date]:
        return [self.first + timedelta(days=n) for n in range((self.last - self.first).days + 1)]

    def hours(self) -> list[datetime]:
        """Every UTC hour of the period (a DST day has 23 or 25)."""
        hour, end, out = counters.hour_of(self.start), self.end.astimezone(UTC), []
        while hour < end:
            out.append(hour)
            hour += timedelta(hours=1)
        return out


def period_of(form: PeriodForm, today: date, tz: tzinfo) -> Period:
    data = form.cleaned_data if form.is_valid() else {}
    kind = data.get("period") or "today"
    if kind == "custom":
        return Period(data["start"], data["end"], tz)
    days = {"today": 1, "7d": 7, "30d": 30}[kind]
    return Period(today - timedelta(days=days - 1), today, tz)


def percentile_of(histogram: dict[str, int], edges: tuple[int, ...], fraction: float) -> float | None:
    """A percentile of what `histogram` counts (upper bound -> count, "inf" past the last of
    `edges`), interpolated linearly inside the bucket it falls in."""
    total = sum(histogram.values())
    if not total:
        return None
    target, seen, lower = fraction * total, 0, 0.0
    for edge in (*edges, None):
        n = histogram.get("inf" if edge is None else str(edge), 0)
        if n and seen + n >= target:
            if edge is None:
                return lower  # beyond the last bound: at least that long
            return lower + (target - seen) / n * (edge - lower)
        seen += n
        lower = float(edge or lower)
    return lower


def p95_seconds(histogram: dict[str, int]) -> float | None:
    """The 95th percentile of the durations counted in `histogram` (upper bound -> calls)."""
    return percentile_of(histogram, counters.DURATION_EDGES, 0.95)


def latency_figures(histogram: dict[str, int]) -> dict[str, int | None]:
    """Turns, and the p50 and p95 turn latency (ms) read from a latency histogram."""
    p50, p95 = (percentile_of(histogram, quality.LATENCY_EDGES_MS, f) for f in (0.5, 0.95))
    return {"turns": sum(histogram.values()), "p50": None if p50 is None else round(p50), "p95": None if p95 is None else round(p95)}


def minutes(seconds: float | None) -> str:
    """A duration as m:ss (h:mm:ss past an hour), as support staff read it."""
    if seconds is None:
        return "—"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def usd(cost_micros: float) -> float:
    return round(cost_micros / 1_000_000, 2)


def reads_period_first(*, in_period: int, in_history: int) -> bool:
    """Whether `slowest_calls` sorts the period's calls (few) rather than walking the latency index."""
    return in_period * in_period <= SLOWEST * in_history


def slowest_calls(period: Period, *, in_period: int, in_history: int) -> QuerySet[Call]:
    """The calls of `period` with the slowest turns (at most ten), slowest first, read the cheaper of
    two ways given how many calls the period and the history hold (from the counters):

    - the period's calls through the creation-date index, sorted: reads `in_period` rows;
    - the partial index on the slowest turn, walked down until ten calls fall in the period: reads
      about `in_history / in_period x 10` entries (the period is then tested on an expression, so
      no planner takes the creation-date index instead).

    Whichever is smaller, at most sqrt(10 x history) rows: about 3,200 at a million calls.
    """
    calls = Call.objects.filter(latency_max_ms__isnull=False)
    if reads_period_first(in_period=in_period, in_history=in_history):
        calls = calls.filter(created_at__gte=period.start, created_at__lt=period.end)
    else:
        calls = calls.alias(created=Coalesce("created_at", "created_at")).filter(created__gte=period.start, created__lt=period.end)
    fields = ("call_id", "created_at", "upstream_model", "latency_max_ms", "latency_p95_ms", "duration_seconds", "source")
    return calls.order_by("-latency_max_ms").only(*fields)[:SLOWEST]


def figures(period: Period) -> dict[str, Any]:
    """Everything the dashboard shows for `period`: five reads of counters and one bounded index read."""
    tz, hours = period.tz, period.hours()
    in_period = {"hour__gte": hours[0], "hour__lt": hours[-1] + timedelta(hours=1)}
    amounts = counters.BUCKET_AMOUNTS

    # 1. Sums per dimension value over the period: end reasons, models, the duration histogram, the total.
    sums: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    rows: Any = (
        CallBucket.objects.filter(dimension__in=("total", "end_reason", "upstream_model", "duration"), **in_period)
        .order_by()
        .values("dimension", "value")
        .annotate(**{name: Sum(name) for name in amounts})
    )
    for row in rows:
        sums[row["dimension"]][row["value"]] = row
    total = sums["total"].get("", dict.fromkeys(amounts, 0))

    # 2. Calls per hour (the total row of each hour); days are folded from them.
    hour_rows = CallBucket.objects.filter(dimension="total", **in_period).values_list("hour", *amounts)
    per_hour = {counters.hour_of(row[0]): row[1:] for row in hour_rows}
    zero = (0,) * len(amounts)
    hourly: list[dict[str, Any]] = [{"hour": hour, **dict(zip(amounts, per_hour.get(hour, zero), strict=True))} for hour in hours]
    day_of = {hour: hour.astimezone(tz).date() for hour in hours}
    daily: dict[date, dict[str, float]] = {day: dict.fromkeys(amounts, 0) for day in period.days}
    for row in hourly:
        for name in amounts:
            daily[day_of[row["hour"]]][name] += row[name]

    # 3. Cost per day and model: one sum per local day and model, added up in the database.
    models = sorted(value for value, row in sums["upstream_model"].items() if row["calls"] or row["cost_micros"])
    bounds = {
        f"d{n}": Sum(
            "cost_micros",
            filter=Q(hour__gte=counters.hour_of(period.start_of(day)), hour__lt=counters.hour_of(period.start_of(day + timedelta(days=1)))),
        )
        for n, day in enumerate(period.days)
    }
    model_rows: Any = CallBucket.objects.filter(dimension="upstream_model", **in_period).order_by().values("value").annotate(**bounds)
    by_model: dict[str, dict[str, Any]] = {row["value"]: row for row in model_rows}
    cost_by_day: dict[date, dict[str, float]] = {
        day: {model: by_model.get(model, {}).get(f"d{n}") or 0 for model in models} for n, day in enumerate(period.days)
    }

    # 4. Live calls now: the status counters of every call (and all of them, for the next read).
    live: dict[tuple[str, str], int] = {}
    for dimension, value, n in CallCounter.objects.filter(scope=counters.ALL, dimension__in=("status", "total")).values_list(
        "dimension", "value", "calls"
    ):
        live[(dimension, value)] = n

    # 5. Turn latency per model over time: the period's latency histograms summed per slot (an hour
    # for a single day, a local day otherwise) and bucket in the database, the slot numbered by a
    # CASE on the hour: a month's ~20,000 rows come back as a few thousand sums, with no timestamp
    # to parse per row.
    multi_day = len(period.days) > 1
    slots: list[Any] = list(period.days) if multi_day else hours
    ends = [counters.hour_of(period.start_of(day + timedelta(days=1))) for day in period.days] if multi_day else hours[1:]
    slot = Case(*(When(hour__lt=end, then=Value(n)) for n, end in enumerate(ends)), default=Value(len(slots) - 1))
    turns: dict[tuple[Any, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    latency_rows = (
        CallBucket.objects.filter(dimension="latency", **in_period)
        .annotate(slot=slot)
        .order_by()
        .values_list("slot", "value")
        .annotate(n=Sum("calls"))
    )
    for n, value, count in latency_rows:
        if not count:
            continue  # turns a monitor's stale rewrite took back
        bucket, model = counters.parse_latency_value(value)
        turns[(slots[n], model)][bucket] += count
        turns[(None, model)][bucket] += count
    latency_models = sorted({model for _, model in turns})

    # 6. The slowest calls of the period.
    slowest = list(slowest_calls(period, in_period=int(total["calls"]), in_history=live.get(("total", ""), 0)))

    histogram = {value: int(row["calls"]) for value, row in sums["duration"].items()}
    duration_calls = total["duration_calls"]
    reasons = sorted(
        ((value, int(row["calls"])) for value, row in sums["end_reason"].items() if row["calls"]), key=lambda item: (-item[1], item[0])
    )
    labels = dict(Call.EndReason.choices)

    # Labels formatted once per day, not once per hour (hours read the same in both languages).
    day_labels = {day: formats.date_format(day, "SHORT_DATE_FORMAT") for day in period.days}

    def hour_label(hour: datetime) -> str:
        local = hour.astimezone(tz)
        text = f"{local.hour:02d}:00"
        return f"{day_labels.get(local.date(), '')} {text}" if multi_day else text

    return {
        "live": {"active": live.get(("status", Call.Status.ACTIVE), 0), "pending": live.get(("status", Call.Status.PENDING), 0)},
        "calls": int(total["calls"]),
        "answered": int(total["answered"]),
        "failed": int(total["failed"]),
        "answer_rate": round(100 * total["answered"] / total["calls"], 1) if total["calls"] else None,
        "avg_duration": minutes(total["duration_seconds"] / duration_calls) if duration_calls else minutes(None),
        "p95_duration": minutes(p95_seconds(histogram)),
        "input_tokens": int(total["input_tokens"]),
        "output_tokens": int(total["output_tokens"]),
        "cost": usd(total["cost_micros"]),
        "reasons": [
            {"value": value, "label": str(labels.get(value, value)), "calls": n, "failure": value in FAILURE_REASONS}
            for value, n in reasons
        ],
        "hourly": [{**row, "label": hour_label(row["hour"])} for row in hourly],
        "daily": [{"day": day, "label": day_labels[day], "cost": usd(row["cost_micros"]), **row} for day, row in daily.items()],
        "models": [
            {
                "model": model,
                "calls": int(sums["upstream_model"][model]["calls"]),
                "input_tokens": int(sums["upstream_model"][model]["input_tokens"]),
                "output_tokens": int(sums["upstream_model"][model]["output_tokens"]),
                "cost": usd(sums["upstream_model"][model]["cost_micros"]),
            }
            for model in models
        ],
        "cost_by_day": [
            {
                "label": day_labels[day],
                "costs": [usd(costs[m]) for m in models],
                "total": usd(sum(costs.values())),
            }
            for day, costs in cost_by_day.items()
        ],
        "durations": [
            {
                "label": f"≤ {minutes(edge)}" if edge is not None else f"> {minutes(counters.DURATION_EDGES[-1])}",
                "calls": histogram.get(str(edge) if edge else "inf", 0),
            }
            for edge in (*counters.DURATION_EDGES, None)
        ],
        "latency": {
            "models": [{"model": model, **latency_figures(turns[(None, model)])} for model in latency_models],
            "rows": [
                {
                    "label": day_labels[slot] if multi_day else hour_label(slot),
                    "models": [latency_figures(turns.get((slot, model), {})) for model in latency_models],
                }
                for slot in slots
            ],
        },
        "slowest": slowest,
    }


def rows_html(rows: list[list[Any]]) -> SafeString:
    """Table rows (a header cell, then numbers), escaped, built at once: a month has 720 hours, and
    the template engine (or `format_html`) takes a millisecond per dozen cells."""
    return mark_safe(  # every cell went through html.escape
        "".join(
            f'<tr><th scope="row">{escape(str(row[0]))}</th>' + "".join(f"<td>{escape(str(cell))}</td>" for cell in row[1:]) + "</tr>"
            for row in rows
        )
    )


def money(amount: float) -> str:
    return formats.number_format(amount, 2)


def tables(data: dict[str, Any]) -> dict[str, SafeString]:
    return {
        "hourly": rows_html([[r["label"], r["calls"], r["answered"], r["failed"]] for r in data["hourly"]]),
        "daily": rows_html([[r["label"], r["calls"], r["answered"], r["failed"], money(r["cost"])] for r in data["daily"]]),
        "cost": rows_html([[r["label"], *map(money, r["costs"]), money(r["total"])] for r in data["cost_by_day"]]),
        "latency": rows_html(
            [[r["label"], *(dash(f[k]) for f in r["models"] for k in ("p50", "p95", "turns"))] for r in data["latency"]["rows"]]
        ),
        "latency_models": rows_html([[m["model"], dash(m["p50"]), dash(m["p95"]), m["turns"]] for m in data["latency"]["models"]]),
    }


def dash(value: int | None) -> str:
    """A figure, or a dash where there is none (no turn measured then)."""
    return "—" if value is None else str(value)


def chart_data(data: dict[str, Any]) -> dict[str, Any]:
    """What the charts draw: labels already translated and formatted, numbers as they are."""
    return {
        "labels": {
            "calls": str(_("Calls")),
            "answered": str(_("Answered")),
            "failed": str(_("Failed")),
            "cost": str(_("Cost (USD)")),
            "latency_ms": str(_("Turn latency (ms)")),
        },
        "hourly": {
            "labels": [r["label"] for r in data["hourly"]],
            **{k: [r[k] for r in data["hourly"]] for k in ("calls", "answered", "failed")},
        },
        "daily": {
            "labels": [r["label"] for r in data["daily"]],
            **{k: [r[k] for r in data["daily"]] for k in ("calls", "answered", "failed")},
        },
        "cost": {
            "labels": [r["label"] for r in data["cost_by_day"]],
            "models": [m["model"] for m in data["models"]],
            "rows": [r["costs"] for r in data["cost_by_day"]],
        },
        "reasons": {
            "labels": [r["label"] for r in data["reasons"]],
            "calls": [r["calls"] for r in data["reasons"]],
            "failure": [r["failure"] for r in data["reasons"]],
        },
        "durations": {"labels": [r["label"] for r in data["durations"]], "calls": [r["calls"] for r in data["durations"]]},
        "latency": {
            "labels": [r["label"] for r in data["latency"]["rows"]],
            "models": [m["model"] for m in data["latency"]["models"]],
            "p50": [[r["models"][i]["p50"] for r in data["latency"]["rows"]] for i in range(len(data["latency"]["models"]))],
            "p95": [[r["models"][i]["p95"] for r in data["latency"]["rows"]] for i in range(len(data["latency"]["models"]))],
        },
    }


def view(request: HttpRequest) -> HttpResponse:
    """`/admin/dashboard/` (staff only: wrapped in `admin.site.admin_view`), for those who may see
    calls (`realtime.view_call`, as the live feed it listens to asks)."""
    if not request.user.has_perm("realtime.view_call"):
        raise PermissionDenied
    form = PeriodForm(request.GET or None)
    tz = timezone.get_current_timezone()
    period = period_of(form, timezone.localdate(), tz)
    data = figures(period)
    context = {
        **admin.site.each_context(request),
        "title": _("Dashboard"),
        "form": form,
        "period": period,
        "time_zone": str(tz),
        "data": data,
        "charts": chart_data(data),
        "tables": tables(data),
    }
    return render(request, "realtime/dashboard.html", context)
