"""A search space in Hydra's sweep syntax, as Optuna distributions: `key=interval(a,b)` (uniform),
`key=tag(log,interval(a,b))` (log-uniform), both real-valued; `key=range(a,b,step)` (stepped, b excluded as in
Python; whole numbers for whole bounds), and `key=choice(x,y)` or `key=x,y` or a YAML list (categorical). The same words
as
hydra-optuna-sweeper's, from `hydra.sweeper.params` or from sweep overrides on the command line."""

from __future__ import annotations

from dataclasses import dataclass

from digitnet.errors import UserError


@dataclass
class Space:
    distributions: dict  # key -> optuna distribution
    fixed: list[str]  # plain overrides every trial gets

    def overrides(self, params: dict) -> list[str]:
        """A trial's overrides: the fixed ones, then its sampled values."""
        return self.fixed + [f"{key}={value_text(value)}" for key, value in params.items()]

    def describe(self) -> dict:
        """What a study was made with, to refuse another space on resume."""
        return {"params": {key: repr(d) for key, d in self.distributions.items()}, "fixed": self.fixed}


def value_text(value) -> str:
    """A value as an override writes it. A string Hydra would read as something else (`1`, `true`, `a,b`, `${x}`)
    is quoted."""
    if isinstance(value, str):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        try:
            parsed = OverridesParser.create().parse_override(f"key={value}")
            if not parsed.is_sweep_override() and parsed.value() == value and "$" not in value:
                return value
        except Exception:  # noqa: BLE001 - Hydra's parser refused it bare: quoted, it is a plain string
            pass
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _distribution(override):
    from hydra.core.override_parser.types import Glob, IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if getattr(value, "shuffle", False):
        raise ValueError("shuffle() means nothing to a search (its order is the sampler's)")
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        tags = set(value.tags)
        if tags - {"log"}:
            raise ValueError(f"tag(s) {', '.join(sorted(tags - {'log'}))} mean nothing to the search; only `log`")
        return FloatDistribution(value.start, value.end, log="log" in tags)  # Hydra's interval() is real-valued
    if override.is_range_sweep() and not value.shuffle:
        assert isinstance(value, RangeSweep)
        values = list(override.sweep_iterator())
        if not values:
            raise ValueError("the range is empty")
        if all(isinstance(v, int) for v in values):
            return IntDistribution(values[0], values[-1], step=int(value.step))
        return FloatDistribution(float(values[0]), float(values[-1]), step=float(value.step))
    if isinstance(value, Glob):
        raise ValueError("glob() picks among a group's options only as a grid does; list them: choice(a,b)")
    if override.is_choice_sweep() or override.is_range_sweep():
        choices = tuple(override.sweep_iterator())
        if not all(v is None or isinstance(v, (bool, int, float, str)) for v in choices):
            raise ValueError("a choice takes plain values (numbers, words, true/false, null)")
        return CategoricalDistribution(choices)
    raise ValueError("a search takes interval(), tag(log, interval()), range() or a choice")


def search_space(params: dict, arguments: list[str]) -> Space:
    """`params` (hydra.sweeper.params) and the command line's overrides; a sweep override on the command line
    joins the space, a plain one is fixed for every trial (and wins over a param of the same key)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if not isinstance(params, dict) or not all(isinstance(v, (str, int, float, list)) for v in params.values()):
        raise UserError(
            "hydra.sweeper.params: give `key: search words` pairs, one per key (a dotted key is one "
            "key), e.g. `optimizer.lr: tag(log, interval(0.0001, 1.0))`",
            key="hydra.sweeper.params",
        )
    lines = [f"{key}={_as_sweep(value)}" for key, value in params.items()] + list(arguments)
    try:
        parsed = OverridesParser.create().parse_overrides(lines)
    except HydraException as exc:
        raise UserError(f"hydra.sweeper.params: {exc}", key="hydra.sweeper.params") from None
    distributions, fixed = {}, []
    for override in parsed:
        key = override.get_key_element()
        if not override.is_sweep_override():
            distributions.pop(key, None)
            fixed.append(override.input_line)
            continue
        try:
            distributions[key] = _distribution(override)
        except ValueError as exc:
            raise UserError(f"{override.input_line}: {exc}", key=key, value=override.input_line) from None
    if not distributions:
        raise UserError(
            "the search has nothing to search: give hydra.sweeper.params (hparams_search=lr) or a sweep "
            "override such as 'optimizer.lr=tag(log,interval(1e-4,1))'",
            key="hydra.sweeper.params",
        )
    return Space(distributions, fixed)


def _as_sweep(value) -> str:
    """A YAML list in params is a choice; anything else is already Hydra's syntax."""
    from omegaconf import ListConfig

    if isinstance(value, (list, ListConfig)):
        return f"choice({','.join(value_text(v) for v in value)})"
    return str(value)
