"""Resource quantities, and the HorizontalPodAutoscaler (autoscaling/v2 and autoscaling/v1).

Quantities are Kubernetes' (apimachinery resource.Quantity): `50m`, `0.5`, `1`, `128Mi`, `1G`,
`1e3`, `.5Ki`. Values are kept exact (fractions); `milli_value` and `value` round up as
Quantity.MilliValue() and Quantity.Value() do, and `format_milli` prints the canonical form
(`NewMilliQuantity(x, DecimalSI).String()`: 1500m, 2, 12k, 10485760).

An autoscaling/v1 object (`targetCPUUtilizationPercentage`) is converted to autoscaling/v2 when
defaults are applied, as the API server stores it; kubectl shows v2 as well. The defaults are the
API server's: minReplicas 1, a cpu utilization target of 80% when no metric is given, and the
scaling rules of `behavior` when a behavior is given (scaleDown's stabilization window stays
unset: the controller's --horizontal-pod-autoscaler-downscale-stabilization fills it).
"""
from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Literal, Optional, Union

from pydantic import Field

from netemu.spec.models import Condition, K8sModel, ObjectMeta

Number = Union[int, str, float]

# --------------------------------------------------------------------------- quantities
_BINARY = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}
_DECIMAL = {"n": Fraction(1, 10 ** 9), "u": Fraction(1, 10 ** 6), "m": Fraction(1, 1000), "": Fraction(1),
            "k": Fraction(10 ** 3), "M": Fraction(10 ** 6), "G": Fraction(10 ** 9), "T": Fraction(10 ** 12),
            "P": Fraction(10 ** 15), "E": Fraction(10 ** 18)}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE]([+-]?\d+))?$")
# canonical suffixes, largest first (DecimalSI)
_CANONICAL = (("E", 18), ("P", 15), ("T", 12), ("G", 9), ("M", 6), ("k", 3), ("", 0), ("m", -3), ("u", -6),
              ("n", -9))


class QuantityError(ValueError):
    pass


def parse_quantity(q: Number) -> Fraction:
    """The exact value of a quantity (`"50m"` -> 1/20, `"128Mi"` -> 134217728). YAML may give a
    plain number too (`cpu: 1`, `cpu: 0.5`)."""
    if isinstance(q, bool):
        raise QuantityError(f"quantities must match the regular expression "
                            f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', got {q!r}")
    if isinstance(q, int):
        return Fraction(q)
    if isinstance(q, float):
        if not math.isfinite(q):
            raise QuantityError(f"not a quantity: {q!r}")
        return Fraction(str(q))
    text = str(q).strip()
    m = _QUANTITY.match(text)
    if not m:
        raise QuantityError(f"quantities must match the regular expression "
                            f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', got {text!r}")
    number, suffix, exponent = m.groups()
    value = Fraction(number)
    if exponent is not None:
        return value * Fraction(10) ** int(exponent)
    suffix = suffix or ""
    return value * (_BINARY[suffix] if suffix in _BINARY else _DECIMAL[suffix])


def milli_value(q: Number) -> int:
    """Quantity.MilliValue(): thousandths, rounded up (`"0.1m"` -> 1, `"1.5"` -> 1500)."""
    return math.ceil(parse_quantity(q) * 1000)


def value(q: Number) -> int:
    """Quantity.Value(): whole units, rounded up (`"1.5Ki"` -> 1536, `"0.5"` -> 1)."""
    return math.ceil(parse_quantity(q))


def is_quantity(q: Number) -> bool:
    try:
        parse_quantity(q)
        return True
    except QuantityError:
        return False


def format_milli(milli: int) -> str:
    """A milli-value as Kubernetes prints a DecimalSI quantity: the largest suffix that keeps the
    number whole (1500 -> "1500m", 2000 -> "2", 12000000 -> "12k", 0 -> "0")."""
    if milli == 0:
        return "0"
    v = Fraction(milli, 1000)
    for suffix, exp in _CANONICAL:
        scaled = v / Fraction(10) ** exp
        if scaled.denominator == 1:
            return f"{scaled.numerator}{suffix}"
    return f"{milli}m"  # not reached: a milli-value is always whole in m


def format_quantity(q: Number) -> str:
    """A quantity as Quantity.String() prints it: binary suffixes stay binary (`"1024Mi"` ->
    `"1Gi"`), everything else in canonical DecimalSI form (`"0.5"` -> `"500m"`)."""
    text = str(q).strip()
    v = parse_quantity(q)
    if text[-2:] in _BINARY and v.denominator == 1 and v >= 1024:
        for suffix, size in sorted(_BINARY.items(), key=lambda kv: -kv[1]):
            if v % size == 0:
                return f"{v // size}{suffix}"
    return format_milli(milli_value(q))


# --------------------------------------------------------------------------- requests and limits
def resource_problems(resources) -> list[tuple[str, str]]:
    """A container's `resources` (ResourceRequirements or None): (field path under the container,
    message) for malformed quantities and requests above limits, as the API server says them."""
    out: list[tuple[str, str]] = []
    if resources is None:
        return out
    parsed: dict[str, dict[str, Fraction]] = {}
    for part, values in (("limits", resources.limits), ("requests", resources.requests)):
        for name, q in (values or {}).items():
            path = f"resources.{part}.{name}"
            try:
                v = parse_quantity(q)
            except QuantityError as e:
                out.append((path, str(e)))
                continue
            if v < 0:
                out.append((path, f"must be greater than or equal to 0, got {q!r}"))
            parsed.setdefault(part, {})[name] = v
    for name, req in (parsed.get("requests") or {}).items():
        lim = (parsed.get("limits") or {}).get(name)
        if lim is not None and req > lim:
            out.append((f"resources.requests.{name}",
                        f"must be less than or equal to {name} limit of {(resources.limits or {})[name]}, "
                        f"got {(resources.requests or {})[name]}"))
    return out


def check_container_resources(container, path: str, loc, report) -> None:
    """Report a container's resource problems into a spec Report (for validate_pods)."""
    for sub, msg in resource_problems(container.resources):
        report.error(loc, f"{path}.{sub}" if path else sub, msg)


# --------------------------------------------------------------------------- the HPA model
class CrossVersionObjectReference(K8sModel):
    kind: str
    name: str
    api_version: Optional[str] = None


class MetricTarget(K8sModel):
    type: Literal["Utilization", "Value", "AverageValue"]
    value: Optional[Number] = None
    average_value: Optional[Number] = None
    average_utilization: Optional[int] = None


class ResourceMetricSource(K8sModel):
    name: str
    target: MetricTarget


class ContainerResourceMetricSource(K8sModel):
    name: str
    container: str
    target: MetricTarget


class MetricIdentifier(K8sModel):
    name: str
    selector: Optional[dict] = None


class PodsMetricSource(K8sModel):
    metric: MetricIdentifier
    target: MetricTarget


class ObjectMetricSource(K8sModel):
    described_object: CrossVersionObjectReference
    metric: MetricIdentifier
    target: MetricTarget


class ExternalMetricSource(K8sModel):
    metric: MetricIdentifier
    target: MetricTarget


class MetricSpec(K8sModel):
    type: Literal["Resource", "ContainerResource", "Pods", "Object", "External"]
    resource: Optional[ResourceMetricSource] = None
    container_resource: Optional[ContainerResourceMetricSource] = None
    pods: Optional[PodsMetricSource] = None
    object: Optional[ObjectMetricSource] = None
    external: Optional[ExternalMetricSource] = None


class HPAScalingPolicy(K8sModel):
    type: Literal["Pods", "Percent"]
    value: int
    period_seconds: int


class HPAScalingRules(K8sModel):
    stabilization_window_seconds: Optional[int] = None
    select_policy: Optional[Literal["Max", "Min", "Disabled"]] = None
    policies: Optional[list[HPAScalingPolicy]] = None


class HorizontalPodAutoscalerBehavior(K8sModel):
    scale_up: Optional[HPAScalingRules] = None
    scale_down: Optional[HPAScalingRules] = None


class HorizontalPodAutoscalerSpec(K8sModel):
    scale_target_ref: CrossVersionObjectReference
    min_replicas: Optional[int] = None
    max_replicas: int
    metrics: Optional[list[MetricSpec]] = None  # autoscaling/v2
    behavior: Optional[HorizontalPodAutoscalerBehavior] = None  # autoscaling/v2
    target_cpu_utilization_percentage: Optional[int] = Field(  # autoscaling/v1
        default=None, alias="targetCPUUtilizationPercentage")


class MetricValueStatus(K8sModel):
    value: Optional[str] = None
    average_value: Optional[str] = None
    average_utilization: Optional[int] = None


class ResourceMetricStatus(K8sModel):
    name: str
    current: MetricValueStatus = Field(default_factory=MetricValueStatus)


class MetricStatus(K8sModel):
    type: str
    resource: Optional[ResourceMetricStatus] = None


class HorizontalPodAutoscalerStatus(K8sModel):
    observed_generation: Optional[int] = None
    last_scale_time: Optional[str] = None
    current_replicas: int = 0
    desired_replicas: int = 0
    current_metrics: Optional[list[MetricStatus]] = None
    conditions: Optional[list[Condition]] = None


class HorizontalPodAutoscaler(K8sModel):
    api_version: str = "autoscaling/v2"
    kind: Literal["HorizontalPodAutoscaler"] = "HorizontalPodAutoscaler"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: HorizontalPodAutoscalerSpec
    status: HorizontalPodAutoscalerStatus = Field(default_factory=HorizontalPodAutoscalerStatus)


API_VERSIONS = ("autoscaling/v2", "autoscaling/v1")
DEFAULT_CPU_UTILIZATION = 80
SCALABLE_KINDS = ("Deployment", "ReplicaSet")  # what netemu can scale (the scale subresource)


def cpu_utilization_metric(percent: int) -> MetricSpec:
    return MetricSpec(type="Resource", resource=ResourceMetricSource(
        name="cpu", target=MetricTarget(type="Utilization", average_utilization=percent)))


def new_hpa(name: str, namespace: str, kind: str, target: str, max_replicas: int,
            min_replicas: Optional[int] = None, cpu_percent: Optional[int] = None,
            api_version: str = "apps/v1") -> HorizontalPodAutoscaler:
    """What `kubectl autoscale` creates (autoscaling/v2; no metric means the 80% cpu default)."""
    hpa = HorizontalPodAutoscaler(
        metadata=ObjectMeta(name=name, namespace=namespace),
        spec=HorizontalPodAutoscalerSpec(
            scale_target_ref=CrossVersionObjectReference(kind=kind, name=target, api_version=api_version),
            min_replicas=min_replicas, max_replicas=max_replicas,
            metrics=[cpu_utilization_metric(cpu_percent)] if cpu_percent is not None and cpu_percent >= 0 else None))
    return default_hpa(hpa)


# --------------------------------------------------------------------------- defaults
def default_scale_up_rules(rules: Optional[HPAScalingRules]) -> HPAScalingRules:
    """GenerateHPAScaleUpRules: no stabilization, the larger of +4 pods or +100% per 15 s."""
    rules = rules.model_copy(deep=True) if rules is not None else HPAScalingRules()
    if rules.select_policy is None:
        rules.select_policy = "Max"
    if rules.policies is None:
        rules.policies = [HPAScalingPolicy(type="Pods", value=4, period_seconds=15),
                          HPAScalingPolicy(type="Percent", value=100, period_seconds=15)]
    if rules.stabilization_window_seconds is None:
        rules.stabilization_window_seconds = 0
    return rules


def default_scale_down_rules(rules: Optional[HPAScalingRules]) -> HPAScalingRules:
    """GenerateHPAScaleDownRules: -100% per 15 s; the window stays unset (the controller's)."""
    rules = rules.model_copy(deep=True) if rules is not None else HPAScalingRules()
    if rules.select_policy is None:
        rules.select_policy = "Max"
    if rules.policies is None:
        rules.policies = [HPAScalingPolicy(type="Percent", value=100, period_seconds=15)]
    return rules


def default_hpa(hpa: HorizontalPodAutoscaler) -> HorizontalPodAutoscaler:
    """The API server's defaults, in place (an autoscaling/v1 object becomes autoscaling/v2)."""
    spec = hpa.spec
    if hpa.api_version == "autoscaling/v1" and not spec.metrics and spec.behavior is None:
        # (a v1 object that carries v2 fields is left as it is, for validation to report)
        percent = spec.target_cpu_utilization_percentage
        spec.metrics = [cpu_utilization_metric(percent if percent is not None else DEFAULT_CPU_UTILIZATION)]
        spec.target_cpu_utilization_percentage = None
        hpa.api_version = "autoscaling/v2"
    if spec.min_replicas is None:
        spec.min_replicas = 1
    if not spec.metrics:
        spec.metrics = [cpu_utilization_metric(DEFAULT_CPU_UTILIZATION)]
    if spec.behavior is not None:
        spec.behavior.scale_up = default_scale_up_rules(spec.behavior.scale_up)
        spec.behavior.scale_down = default_scale_down_rules(spec.behavior.scale_down)
    return hpa


# --------------------------------------------------------------------------- validation
def hpa_problems(hpa: HorizontalPodAutoscaler) -> tuple[list, list]:
    """(errors, warnings), each a list of (field path, message), as the API server's validation
    says them. Runs before or after `default_hpa`."""
    errors: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    spec = hpa.spec
    version = hpa.api_version
    if version == "autoscaling/v1" and (spec.metrics or spec.behavior):
        errors.append(("spec", "metrics and behavior are autoscaling/v2 fields: use apiVersion: autoscaling/v2"))
    if version == "autoscaling/v2" and spec.target_cpu_utilization_percentage is not None:
        errors.append(("spec.targetCPUUtilizationPercentage", "is an autoscaling/v1 field: in autoscaling/v2 "
                       "write metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, "
                       "averageUtilization: N}}}]"))
    if spec.target_cpu_utilization_percentage is not None and spec.target_cpu_utilization_percentage < 1:
        errors.append(("spec.targetCPUUtilizationPercentage", "must be greater than or equal to 1"))
    ref = spec.scale_target_ref
    if not ref.kind:
        errors.append(("spec.scaleTargetRef.kind", "Required value"))
    elif ref.kind not in SCALABLE_KINDS:
        warnings.append(("spec.scaleTargetRef.kind", f"netemu scales {' and '.join(SCALABLE_KINDS)} only: "
                         f"this autoscaler will report FailedGetScale"))
    if not ref.name:
        errors.append(("spec.scaleTargetRef.name", "Required value"))
    if spec.min_replicas is not None and spec.min_replicas < 1:
        errors.append(("spec.minReplicas", f"must be greater than or equal to 1, got {spec.min_replicas}"))
    if spec.max_replicas < 1:
        errors.append(("spec.maxReplicas", f"must be greater than 0, got {spec.max_replicas}"))
    elif spec.min_replicas is not None and spec.max_replicas < spec.min_replicas:
        errors.append(("spec.maxReplicas", f"must be greater than or equal to `minReplicas` "
                       f"({spec.max_replicas} < {spec.min_replicas})"))
    for i, m in enumerate(spec.metrics or []):
        errors += _metric_problems(m, f"spec.metrics[{i}]", warnings)
    b = spec.behavior
    for side, rules in (("scaleUp", b.scale_up if b else None), ("scaleDown", b.scale_down if b else None)):
        if rules is None:
            continue
        path = f"spec.behavior.{side}"
        w = rules.stabilization_window_seconds
        if w is not None and not 0 <= w <= 3600:
            errors.append((f"{path}.stabilizationWindowSeconds", f"must be between 0 and 3600, got {w}"))
        if rules.policies is not None and not rules.policies and rules.select_policy != "Disabled":
            errors.append((f"{path}.policies", "must specify at least one Policy"))
        for j, p in enumerate(rules.policies or []):
            if p.value <= 0:
                errors.append((f"{path}.policies[{j}].value", f"must be greater than zero, got {p.value}"))
            if not 0 < p.period_seconds <= 1800:
                errors.append((f"{path}.policies[{j}].periodSeconds",
                               f"must be greater than zero and less than or equal to 1800, got {p.period_seconds}"))
    return errors, warnings


def _metric_problems(m: MetricSpec, path: str, warnings: list) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    field = {"Resource": "resource", "ContainerResource": "containerResource", "Pods": "pods",
             "Object": "object", "External": "external"}[m.type]
    source = getattr(m, {"containerResource": "container_resource"}.get(field, field))
    if source is None:
        return [(f"{path}.{field}", f"must be populated for type {m.type}")]
    if m.type != "Resource":
        warnings.append((f"{path}.type", f"{m.type} metrics need a custom or external metrics API, which netemu "
                         "does not have: this metric will report FailedGet" + m.type + "Metric"))
        return errors
    target = source.target
    if source.name not in ("cpu", "memory"):
        errors.append((f"{path}.resource.name", f"netemu measures cpu and memory, got {source.name!r}"))
    if target.type == "Utilization":
        if target.average_utilization is None:
            errors.append((f"{path}.resource.target.averageUtilization", "must be set for type Utilization"))
        elif target.average_utilization <= 0:
            errors.append((f"{path}.resource.target.averageUtilization",
                           f"must be greater than 0, got {target.average_utilization}"))
    elif target.type == "AverageValue":
        if target.average_value is None:
            errors.append((f"{path}.resource.target.averageValue", "must be set for type AverageValue"))
        elif not is_quantity(target.average_value):
            errors.append((f"{path}.resource.target.averageValue", f"{target.average_value!r} is not a quantity"))
        elif parse_quantity(target.average_value) <= 0:
            errors.append((f"{path}.resource.target.averageValue", "must be positive"))
    else:
        errors.append((f"{path}.resource.target.type", "must be either Utilization or AverageValue"))
    return errors


def check_hpa(hpa: HorizontalPodAutoscaler, loc, report) -> None:
    """Report every problem of an HPA into a spec Report (see netemu.spec.validate)."""
    errors, warnings = hpa_problems(hpa)
    for path, msg in errors:
        report.error(loc, path, msg)
    for path, msg in warnings:
        report.warn(loc, path, msg)


def effective_metrics(hpa: HorizontalPodAutoscaler) -> list[MetricSpec]:
    """The metrics an HPA is driven by, defaults included, without changing the object (an
    autoscaling/v1 object that was not converted, or one with no metrics: cpu at 80% or v1's target)."""
    spec = hpa.spec
    if spec.metrics:
        return list(spec.metrics)
    percent = spec.target_cpu_utilization_percentage
    return [cpu_utilization_metric(percent if percent is not None else DEFAULT_CPU_UTILIZATION)]


# --------------------------------------------------------------------------- registration
# models imports this module at its end (as it does netemu.spec.ingress), so the kind is known
# whichever of the two is imported first
from netemu.spec import models as _models  # noqa: E402

_models.KINDS.setdefault("HorizontalPodAutoscaler", HorizontalPodAutoscaler)
_models.API_VERSIONS.setdefault("HorizontalPodAutoscaler", API_VERSIONS)
_models.NAMESPACED.add("HorizontalPodAutoscaler")
