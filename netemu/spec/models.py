"""Typed Kubernetes objects (the subset netemu understands) and the Lab document.

Field names follow the Kubernetes API (camelCase in YAML/JSON, snake_case in Python).
Unknown fields are kept (``extra='allow'``) so that the loader can warn about them and
``-o yaml`` can show what the user wrote. Defaults that Kubernetes applies (protocol TCP,
targetPort = port, ...) are applied in :mod:`netemu.spec.defaults`, not here, so that a
model always shows what was declared plus what the API server would fill in.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

IntOrString = Union[int, str]


class K8sModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        validate_assignment=False,
        protected_namespaces=(),
        defer_build=True,  # validators are built on first use: a verb pays for the kinds it reads, not all (start-up)
    )

    def dump(self) -> dict[str, Any]:
        """The object as Kubernetes shows it: camelCase keys, nothing unset."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --------------------------------------------------------------------------- metadata
class OwnerReference(K8sModel):
    api_version: str = "apps/v1"
    kind: str
    name: str
    uid: str = ""
    controller: Optional[bool] = None


class ObjectMeta(K8sModel):
    name: Optional[str] = None
    generate_name: Optional[str] = None
    namespace: Optional[str] = None
    labels: Optional[dict[str, str]] = None
    annotations: Optional[dict[str, str]] = None
    uid: Optional[str] = None
    resource_version: Optional[str] = None
    generation: Optional[int] = None
    creation_timestamp: Optional[str] = None
    deletion_timestamp: Optional[str] = None
    deletion_grace_period_seconds: Optional[int] = None
    owner_references: Optional[list[OwnerReference]] = None


class LabelSelectorRequirement(K8sModel):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: Optional[list[str]] = None


class LabelSelector(K8sModel):
    match_labels: Optional[dict[str, str]] = None
    match_expressions: Optional[list[LabelSelectorRequirement]] = None


# --------------------------------------------------------------------------- pods
class EnvVarSource(K8sModel):
    field_ref: Optional[dict[str, Any]] = None
    config_map_key_ref: Optional[dict[str, Any]] = None
    secret_key_ref: Optional[dict[str, Any]] = None
    resource_field_ref: Optional[dict[str, Any]] = None


class EnvVar(K8sModel):
    name: str
    value: Optional[str] = None
    value_from: Optional[EnvVarSource] = None


class ContainerPort(K8sModel):
    name: Optional[str] = None
    container_port: int
    protocol: Optional[Literal["TCP", "UDP", "SCTP"]] = None
    host_port: Optional[int] = None
    host_ip: Optional[str] = Field(default=None, alias="hostIP")


class HTTPHeader(K8sModel):
    name: str
    value: str


class HTTPGetAction(K8sModel):
    path: Optional[str] = None
    port: IntOrString
    host: Optional[str] = None
    scheme: Optional[Literal["HTTP", "HTTPS"]] = None
    http_headers: Optional[list[HTTPHeader]] = None


class TCPSocketAction(K8sModel):
    port: IntOrString
    host: Optional[str] = None


class ExecAction(K8sModel):
    command: list[str]


class Probe(K8sModel):
    http_get: Optional[HTTPGetAction] = None
    tcp_socket: Optional[TCPSocketAction] = None
    exec: Optional[ExecAction] = None
    initial_delay_seconds: Optional[int] = None
    period_seconds: Optional[int] = None
    timeout_seconds: Optional[int] = None
    failure_threshold: Optional[int] = None
    success_threshold: Optional[int] = None
    termination_grace_period_seconds: Optional[int] = None


class SleepAction(K8sModel):
    seconds: int


class LifecycleHandler(K8sModel):
    exec: Optional[ExecAction] = None
    http_get: Optional[HTTPGetAction] = None
    tcp_socket: Optional[TCPSocketAction] = None
    sleep: Optional[SleepAction] = None


class Lifecycle(K8sModel):
    """Container hooks: postStart after the container starts, preStop before kubelet sends SIGTERM."""
    post_start: Optional[LifecycleHandler] = None
    pre_stop: Optional[LifecycleHandler] = None


class ResourceRequirements(K8sModel):
    requests: Optional[dict[str, IntOrString | float]] = None
    limits: Optional[dict[str, IntOrString | float]] = None


# --------------------------------------------------------------------------- security contexts
class Capabilities(K8sModel):
    add: Optional[list[str]] = None
    drop: Optional[list[str]] = None


class SELinuxOptions(K8sModel):
    user: Optional[str] = None
    role: Optional[str] = None
    type: Optional[str] = None
    level: Optional[str] = None


class SeccompProfile(K8sModel):
    type: str  # RuntimeDefault | Unconfined | Localhost (checked by validation)
    localhost_profile: Optional[str] = None


class AppArmorProfile(K8sModel):
    type: str  # RuntimeDefault | Unconfined | Localhost (checked by validation)
    localhost_profile: Optional[str] = None


class WindowsSecurityContextOptions(K8sModel):
    gmsa_credential_spec_name: Optional[str] = None
    gmsa_credential_spec: Optional[str] = None
    run_as_user_name: Optional[str] = None
    host_process: Optional[bool] = None


class Sysctl(K8sModel):
    name: str
    value: str


class SecurityContext(K8sModel):
    """A container's: who its processes are and what they may do (netemu.dataplane.security)."""
    capabilities: Optional[Capabilities] = None
    privileged: Optional[bool] = None
    se_linux_options: Optional[SELinuxOptions] = None
    windows_options: Optional[WindowsSecurityContextOptions] = None
    run_as_user: Optional[int] = None
    run_as_group: Optional[int] = None
    run_as_non_root: Optional[bool] = None
    read_only_root_filesystem: Optional[bool] = None
    allow_privilege_escalation: Optional[bool] = None
    proc_mount: Optional[str] = None  # Default | Unmasked
    seccomp_profile: Optional[SeccompProfile] = None
    app_armor_profile: Optional[AppArmorProfile] = None


class PodSecurityContext(K8sModel):
    """The pod's: defaults for its containers' (runAsUser, runAsGroup, runAsNonRoot...) and its groups."""
    se_linux_options: Optional[SELinuxOptions] = None
    windows_options: Optional[WindowsSecurityContextOptions] = None
    run_as_user: Optional[int] = None
    run_as_group: Optional[int] = None
    run_as_non_root: Optional[bool] = None
    supplemental_groups: Optional[list[int]] = None
    supplemental_groups_policy: Optional[str] = None  # Merge | Strict
    fs_group: Optional[int] = None
    sysctls: Optional[list[Sysctl]] = None
    fs_group_change_policy: Optional[str] = None  # OnRootMismatch | Always
    seccomp_profile: Optional[SeccompProfile] = None
    app_armor_profile: Optional[AppArmorProfile] = None
    se_linux_change_policy: Optional[str] = None


class Container(K8sModel):
    name: str
    image: Optional[str] = None
    command: Optional[list[str]] = None
    args: Optional[list[str]] = None
    working_dir: Optional[str] = None
    env: Optional[list[EnvVar]] = None
    ports: Optional[list[ContainerPort]] = None
    resources: Optional[ResourceRequirements] = None
    readiness_probe: Optional[Probe] = None
    liveness_probe: Optional[Probe] = None
    startup_probe: Optional[Probe] = None
    lifecycle: Optional[Lifecycle] = None
    # an init container with restartPolicy Always is a sidecar: started in order, then kept running
    restart_policy: Optional[str] = None
    image_pull_policy: Optional[str] = None
    security_context: Optional[SecurityContext] = None
    stdin: Optional[bool] = None  # kept open for `kubectl attach` (netemu.dataplane.stdio)
    stdin_once: Optional[bool] = None
    tty: Optional[bool] = None


class Toleration(K8sModel):
    key: Optional[str] = None
    operator: Optional[str] = None  # Exists | Equal (checked by validation, in the API server's words)
    value: Optional[str] = None
    effect: Optional[str] = None
    toleration_seconds: Optional[int] = None


# --------------------------------------------------------------------------- affinity, spreading
class NodeSelectorRequirement(K8sModel):
    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist | Gt | Lt (checked by validation)
    values: Optional[list[str]] = None


class NodeSelectorTerm(K8sModel):
    match_expressions: Optional[list[NodeSelectorRequirement]] = None
    match_fields: Optional[list[NodeSelectorRequirement]] = None


class NodeSelector(K8sModel):
    node_selector_terms: list[NodeSelectorTerm]


class PreferredSchedulingTerm(K8sModel):
    weight: int
    preference: NodeSelectorTerm


class NodeAffinity(K8sModel):
    required_during_scheduling_ignored_during_execution: Optional[NodeSelector] = None
    preferred_during_scheduling_ignored_during_execution: Optional[list[PreferredSchedulingTerm]] = None


class PodAffinityTerm(K8sModel):
    label_selector: Optional[LabelSelector] = None
    namespaces: Optional[list[str]] = None
    topology_key: str = ""  # required: validation says so in the API server's words
    namespace_selector: Optional[LabelSelector] = None
    match_label_keys: Optional[list[str]] = None
    mismatch_label_keys: Optional[list[str]] = None


class WeightedPodAffinityTerm(K8sModel):
    weight: int
    pod_affinity_term: PodAffinityTerm


class PodAffinity(K8sModel):
    required_during_scheduling_ignored_during_execution: Optional[list[PodAffinityTerm]] = None
    preferred_during_scheduling_ignored_during_execution: Optional[list[WeightedPodAffinityTerm]] = None


class PodAntiAffinity(K8sModel):
    required_during_scheduling_ignored_during_execution: Optional[list[PodAffinityTerm]] = None
    preferred_during_scheduling_ignored_during_execution: Optional[list[WeightedPodAffinityTerm]] = None


class Affinity(K8sModel):
    node_affinity: Optional[NodeAffinity] = None
    pod_affinity: Optional[PodAffinity] = None
    pod_anti_affinity: Optional[PodAntiAffinity] = None


class TopologySpreadConstraint(K8sModel):
    max_skew: int
    topology_key: str
    when_unsatisfiable: str  # DoNotSchedule | ScheduleAnyway
    label_selector: Optional[LabelSelector] = None
    min_domains: Optional[int] = None
    node_affinity_policy: Optional[str] = None  # Honor (default) | Ignore
    node_taints_policy: Optional[str] = None  # Ignore (default) | Honor
    match_label_keys: Optional[list[str]] = None


class PodSchedulingGate(K8sModel):
    name: str


class PodDNSConfigOption(K8sModel):
    name: str
    value: Optional[str] = None


class PodDNSConfig(K8sModel):
    nameservers: Optional[list[str]] = None
    searches: Optional[list[str]] = None
    options: Optional[list[PodDNSConfigOption]] = None


class PodSpec(K8sModel):
    containers: list[Container]
    init_containers: Optional[list[Container]] = None
    restart_policy: Optional[Literal["Always", "OnFailure", "Never"]] = None
    node_name: Optional[str] = None
    node_selector: Optional[dict[str, str]] = None
    tolerations: Optional[list[Toleration]] = None
    affinity: Optional[Affinity] = None
    topology_spread_constraints: Optional[list[TopologySpreadConstraint]] = None
    scheduler_name: Optional[str] = None
    scheduling_gates: Optional[list[PodSchedulingGate]] = None
    priority: Optional[int] = None
    preemption_policy: Optional[str] = None
    overhead: Optional[dict[str, IntOrString | float]] = None
    active_deadline_seconds: Optional[int] = None
    hostname: Optional[str] = None
    subdomain: Optional[str] = None
    dns_policy: Optional[Literal["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"]] = None
    dns_config: Optional[PodDNSConfig] = None
    host_network: Optional[bool] = None
    termination_grace_period_seconds: Optional[int] = None
    priority_class_name: Optional[str] = None
    service_account_name: Optional[str] = None
    automount_service_account_token: Optional[bool] = None
    enable_service_links: Optional[bool] = None
    security_context: Optional[PodSecurityContext] = None


class PodTemplateSpec(K8sModel):
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PodSpec


class ContainerStateRunning(K8sModel):
    started_at: Optional[str] = None


class ContainerStateWaiting(K8sModel):
    reason: Optional[str] = None
    message: Optional[str] = None


class ContainerStateTerminated(K8sModel):
    exit_code: int = 0
    signal: Optional[int] = None
    reason: Optional[str] = None
    message: Optional[str] = None
    started_at: Optional[str] = None
    finished_at: Optional[str] = None


class ContainerState(K8sModel):
    running: Optional[ContainerStateRunning] = None
    waiting: Optional[ContainerStateWaiting] = None
    terminated: Optional[ContainerStateTerminated] = None


class ContainerStatus(K8sModel):
    name: str
    image: str = ""
    image_id: str = Field(default="", alias="imageID")  # required in the API: clients insist on it
    ready: bool = False
    started: Optional[bool] = None
    restart_count: int = 0
    state: ContainerState = Field(default_factory=ContainerState)
    last_state: Optional[ContainerState] = None
    container_id: Optional[str] = Field(default=None, alias="containerID")


class Condition(K8sModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: Optional[str] = None
    message: Optional[str] = None
    last_transition_time: Optional[str] = None
    last_probe_time: Optional[str] = None
    last_heartbeat_time: Optional[str] = None  # node conditions


class PodIP(K8sModel):
    ip: str


class PodStatus(K8sModel):
    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"] = "Pending"
    conditions: Optional[list[Condition]] = None
    host_ip: Optional[str] = Field(default=None, alias="hostIP")
    pod_ip: Optional[str] = Field(default=None, alias="podIP")
    pod_ips: Optional[list[PodIP]] = Field(default=None, alias="podIPs")
    start_time: Optional[str] = None
    reason: Optional[str] = None
    message: Optional[str] = None
    nominated_node_name: Optional[str] = None
    qos_class: Optional[str] = None
    init_container_statuses: Optional[list[ContainerStatus]] = None
    container_statuses: Optional[list[ContainerStatus]] = None


class Pod(K8sModel):
    api_version: str = "v1"
    kind: Literal["Pod"] = "Pod"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PodSpec
    status: PodStatus = Field(default_factory=PodStatus)


# --------------------------------------------------------------------------- workloads
class DeploymentStrategy(K8sModel):
    type: Optional[Literal["RollingUpdate", "Recreate"]] = None
    rolling_update: Optional[dict[str, IntOrString]] = None


class DeploymentSpec(K8sModel):
    replicas: Optional[int] = None
    selector: LabelSelector
    template: PodTemplateSpec
    strategy: Optional[DeploymentStrategy] = None
    min_ready_seconds: Optional[int] = None
    revision_history_limit: Optional[int] = None
    progress_deadline_seconds: Optional[int] = None
    paused: Optional[bool] = None


class DeploymentStatus(K8sModel):
    observed_generation: Optional[int] = None
    replicas: int = 0
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    unavailable_replicas: Optional[int] = None
    conditions: Optional[list[Condition]] = None


class Deployment(K8sModel):
    api_version: str = "apps/v1"
    kind: Literal["Deployment"] = "Deployment"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: DeploymentSpec
    status: DeploymentStatus = Field(default_factory=DeploymentStatus)


class ReplicaSetSpec(K8sModel):
    replicas: int = 1
    selector: LabelSelector
    template: PodTemplateSpec
    min_ready_seconds: Optional[int] = None


class ReplicaSetStatus(K8sModel):
    replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    observed_generation: Optional[int] = None


class ReplicaSet(K8sModel):
    api_version: str = "apps/v1"
    kind: Literal["ReplicaSet"] = "ReplicaSet"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ReplicaSetSpec
    status: ReplicaSetStatus = Field(default_factory=ReplicaSetStatus)


class RollingUpdateDaemonSet(K8sModel):
    max_unavailable: Optional[IntOrString] = None
    max_surge: Optional[IntOrString] = None


class DaemonSetUpdateStrategy(K8sModel):
    type: Optional[str] = None  # RollingUpdate | OnDelete
    rolling_update: Optional[RollingUpdateDaemonSet] = None


class DaemonSetSpec(K8sModel):
    # optional here so that every problem of a DaemonSet is reported at once (validation requires them)
    selector: Optional[LabelSelector] = None
    template: Optional[PodTemplateSpec] = None
    update_strategy: Optional[DaemonSetUpdateStrategy] = None
    min_ready_seconds: Optional[int] = None
    revision_history_limit: Optional[int] = None


class DaemonSetStatus(K8sModel):
    current_number_scheduled: int = 0
    number_misscheduled: int = 0
    desired_number_scheduled: int = 0
    number_ready: int = 0
    observed_generation: Optional[int] = None
    updated_number_scheduled: Optional[int] = None
    number_available: Optional[int] = None
    number_unavailable: Optional[int] = None
    collision_count: Optional[int] = None
    conditions: Optional[list[Condition]] = None


class DaemonSet(K8sModel):
    """A DaemonSet runs one copy of a pod on every node its template may run on."""
    api_version: str = "apps/v1"
    kind: Literal["DaemonSet"] = "DaemonSet"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: DaemonSetSpec = Field(default_factory=DaemonSetSpec)
    status: DaemonSetStatus = Field(default_factory=DaemonSetStatus)


class JobSpec(K8sModel):
    template: Optional[PodTemplateSpec] = None
    selector: Optional[LabelSelector] = None
    manual_selector: Optional[bool] = None
    parallelism: Optional[int] = None
    completions: Optional[int] = None
    completion_mode: Optional[str] = None  # NonIndexed | Indexed
    backoff_limit: Optional[int] = None
    active_deadline_seconds: Optional[int] = None
    ttl_seconds_after_finished: Optional[int] = None
    suspend: Optional[bool] = None
    pod_replacement_policy: Optional[str] = None


class JobStatus(K8sModel):
    conditions: Optional[list[Condition]] = None
    start_time: Optional[str] = None
    completion_time: Optional[str] = None
    active: Optional[int] = None
    succeeded: Optional[int] = None
    failed: Optional[int] = None
    terminating: Optional[int] = None
    ready: Optional[int] = None
    completed_indexes: Optional[str] = None
    uncounted_terminated_pods: Optional[dict[str, Any]] = None


class Job(K8sModel):
    """A Job runs pods until a number of them complete."""
    api_version: str = "batch/v1"
    kind: Literal["Job"] = "Job"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: JobSpec = Field(default_factory=JobSpec)
    status: JobStatus = Field(default_factory=JobStatus)


class PodDisruptionBudgetSpec(K8sModel):
    min_available: Optional[IntOrString] = None
    max_unavailable: Optional[IntOrString] = None
    selector: Optional[LabelSelector] = None
    unhealthy_pod_eviction_policy: Optional[str] = None  # IfHealthyBudget | AlwaysAllow


class PodDisruptionBudgetStatus(K8sModel):
    observed_generation: Optional[int] = None
    disrupted_pods: Optional[dict[str, str]] = None
    disruptions_allowed: int = 0
    current_healthy: int = 0
    desired_healthy: int = 0
    expected_pods: int = 0
    conditions: Optional[list[Condition]] = None


class PodDisruptionBudget(K8sModel):
    """A PodDisruptionBudget limits how many of a set of pods voluntary disruptions (eviction, drain)
    may take down at once."""
    api_version: str = "policy/v1"
    kind: Literal["PodDisruptionBudget"] = "PodDisruptionBudget"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PodDisruptionBudgetSpec = Field(default_factory=PodDisruptionBudgetSpec)
    status: PodDisruptionBudgetStatus = Field(default_factory=PodDisruptionBudgetStatus)


# --------------------------------------------------------------------------- services
class ServicePort(K8sModel):
    name: Optional[str] = None
    protocol: Optional[Literal["TCP", "UDP", "SCTP"]] = None
    app_protocol: Optional[str] = None
    port: int
    target_port: Optional[IntOrString] = None
    node_port: Optional[int] = None


class ClientIPConfig(K8sModel):
    timeout_seconds: Optional[int] = None


class SessionAffinityConfig(K8sModel):
    client_ip: Optional[ClientIPConfig] = Field(default=None, alias="clientIP")


class ServiceSpec(K8sModel):
    type: Optional[Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]] = None
    selector: Optional[dict[str, str]] = None
    ports: Optional[list[ServicePort]] = None
    cluster_ip: Optional[str] = Field(default=None, alias="clusterIP")
    cluster_ips: Optional[list[str]] = Field(default=None, alias="clusterIPs")
    external_ips: Optional[list[str]] = Field(default=None, alias="externalIPs")
    external_name: Optional[str] = None
    session_affinity: Optional[Literal["None", "ClientIP"]] = None
    session_affinity_config: Optional[SessionAffinityConfig] = None
    load_balancer_ip: Optional[str] = Field(default=None, alias="loadBalancerIP")
    load_balancer_source_ranges: Optional[list[str]] = None
    load_balancer_class: Optional[str] = None
    allocate_load_balancer_node_ports: Optional[bool] = None
    external_traffic_policy: Optional[Literal["Cluster", "Local"]] = None
    internal_traffic_policy: Optional[Literal["Cluster", "Local"]] = None
    health_check_node_port: Optional[int] = None
    publish_not_ready_addresses: Optional[bool] = None
    ip_families: Optional[list[str]] = None
    ip_family_policy: Optional[str] = None


class LoadBalancerIngress(K8sModel):
    ip: Optional[str] = None
    hostname: Optional[str] = None
    ip_mode: Optional[str] = None


class LoadBalancerStatus(K8sModel):
    ingress: Optional[list[LoadBalancerIngress]] = None


class ServiceStatus(K8sModel):
    load_balancer: LoadBalancerStatus = Field(default_factory=LoadBalancerStatus)


class Service(K8sModel):
    api_version: str = "v1"
    kind: Literal["Service"] = "Service"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: ServiceSpec = Field(default_factory=ServiceSpec)
    status: ServiceStatus = Field(default_factory=ServiceStatus)


class EndpointConditions(K8sModel):
    ready: Optional[bool] = None
    serving: Optional[bool] = None
    terminating: Optional[bool] = None


class ObjectReference(K8sModel):
    kind: Optional[str] = None
    namespace: Optional[str] = None
    name: Optional[str] = None
    uid: Optional[str] = None


class Endpoint(K8sModel):
    addresses: list[str]
    conditions: EndpointConditions = Field(default_factory=EndpointConditions)
    hostname: Optional[str] = None
    target_ref: Optional[ObjectReference] = None
    node_name: Optional[str] = None
    zone: Optional[str] = None


class EndpointPort(K8sModel):
    name: Optional[str] = None
    protocol: Optional[Literal["TCP", "UDP", "SCTP"]] = None
    port: Optional[int] = None
    app_protocol: Optional[str] = None


class EndpointSlice(K8sModel):
    api_version: str = "discovery.k8s.io/v1"
    kind: Literal["EndpointSlice"] = "EndpointSlice"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    address_type: Literal["IPv4", "IPv6", "FQDN"] = "IPv4"
    endpoints: list[Endpoint] = Field(default_factory=list)
    ports: Optional[list[EndpointPort]] = None


# --------------------------------------------------------------------------- config
class Namespace(K8sModel):
    api_version: str = "v1"
    kind: Literal["Namespace"] = "Namespace"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    status: dict[str, Any] = Field(default_factory=lambda: {"phase": "Active"})


class ConfigMap(K8sModel):
    api_version: str = "v1"
    kind: Literal["ConfigMap"] = "ConfigMap"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    data: Optional[dict[str, str]] = None
    binary_data: Optional[dict[str, str]] = None


class Secret(K8sModel):
    api_version: str = "v1"
    kind: Literal["Secret"] = "Secret"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    type: Optional[str] = None
    data: Optional[dict[str, str]] = None
    string_data: Optional[dict[str, str]] = None


class Event(K8sModel):
    api_version: str = "v1"
    kind: Literal["Event"] = "Event"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    involved_object: ObjectReference
    type: Literal["Normal", "Warning"] = "Normal"
    reason: str = ""
    message: str = ""
    source: Optional[dict[str, str]] = None
    first_timestamp: Optional[str] = None
    last_timestamp: Optional[str] = None
    count: int = 1


# --------------------------------------------------------------------------- nodes
class Taint(K8sModel):
    key: str
    value: Optional[str] = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
    time_added: Optional[str] = None  # set for NoExecute taints: tolerationSeconds count from it


class NodeSpec(K8sModel):
    pod_cidr: Optional[str] = Field(default=None, alias="podCIDR")
    pod_cidrs: Optional[list[str]] = Field(default=None, alias="podCIDRs")
    unschedulable: Optional[bool] = None
    taints: Optional[list[Taint]] = None


class NodeAddress(K8sModel):
    type: str
    address: str


class NodeStatus(K8sModel):
    conditions: Optional[list[Condition]] = None
    addresses: Optional[list[NodeAddress]] = None
    node_info: Optional[dict[str, str]] = None
    capacity: Optional[dict[str, str]] = None
    allocatable: Optional[dict[str, str]] = None


class Node(K8sModel):
    api_version: str = "v1"
    kind: Literal["Node"] = "Node"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus = Field(default_factory=NodeStatus)


# --------------------------------------------------------------------------- the lab
class LabNode(K8sModel):
    name: str
    ip: str
    # the node's IPv6 address in a dual-stack lab (``ip: v4,v6`` as kubelet's --node-ip is split into
    # ip and ip6); unset: the lab's network6 prefix and the IPv4 address's last number (101 -> ::101)
    ip6: Optional[str] = None
    role: Literal["control-plane", "worker"] = "worker"
    labels: Optional[dict[str, str]] = None
    # what the node's kubelet reports (cpu, memory, pods, ephemeral-storage, hugepages-*, extended
    # resources): by default the seeds' Vagrant VMs (netemu.control.nodes.SEED_CAPACITY); allocatable
    # defaults to capacity less kubelet's eviction thresholds (memory 100Mi, ephemeral-storage 10%)
    capacity: Optional[dict[str, IntOrString | float]] = None
    allocatable: Optional[dict[str, IntOrString | float]] = None
    taints: Optional[list[Taint]] = None  # registered with these (kubeadm's --register-with-taints)

    @model_validator(mode="before")
    @classmethod
    def _split_families(cls, data: Any) -> Any:
        from netemu.spec.families import DUAL_NODE_KEYS, split_document

        return split_document(data, DUAL_NODE_KEYS)


DEFAULT_HOST_ASN = 64499  # the host's ASN in a router's upstream session (next to the lab routers' 64500)


class LabRouter(K8sModel):
    """A router on the lab segment (a namespace running FRR: zebra, bgpd, bfdd) that MetalLB's BGP speakers
    peer with; the host routes the BGP pools through it."""

    name: str
    ip: str
    ip6: Optional[str] = None
    asn: int
    # a BGP session with the host's end of the lab segment (its gateway address, never anything else): the
    # host's routes to the BGP pools are what it learns there (netemu.dataplane.bgp), not a static route
    upstream: bool = False
    host_asn: Optional[int] = Field(default=None, alias="hostASN")  # the host's side; unset: DEFAULT_HOST_ASN

    @model_validator(mode="before")
    @classmethod
    def _split_families(cls, data: Any) -> Any:
        from netemu.spec.families import DUAL_NODE_KEYS, split_document

        return split_document(data, DUAL_NODE_KEYS)


class LabSpec(K8sModel):
    network: str = "192.168.1.0/24"
    gateway: str = "192.168.1.1"
    # dual-stack (netemu.spec.families): each IPv4 range's IPv6 twin, written "v4,v6" in the IPv4 key
    # as kubeadm takes them, or in these keys; all unset is an IPv4-only lab
    network6: Optional[str] = None
    gateway6: Optional[str] = None  # unset: the first address of network6
    pod_cidr6: Optional[str] = Field(default=None, alias="podCIDR6")
    node_pod_prefix6: int = 64  # kube-controller-manager's --node-cidr-mask-size-ipv6
    service_cidr6: Optional[str] = Field(default=None, alias="serviceCIDR6")
    nodes: Optional[list[LabNode]] = None
    routers: Optional[list[LabRouter]] = None
    pod_cidr: str = Field(default="172.16.0.0/16", alias="podCIDR")
    node_pod_prefix: int = 24
    service_cidr: str = Field(default="10.96.0.0/12", alias="serviceCIDR")
    cluster_dns: str = Field(default="10.96.0.10", alias="clusterDNS")
    cluster_domain: str = "cluster.local"
    dns_ttl: int = Field(default=30, alias="dnsTTL")
    proxy_mode: Literal["iptables", "nftables", "ipvs"] = "iptables"
    # which iptables kube-proxy runs in the nodes: Debian's default (nft) or legacy (x_tables)
    iptables_backend: Literal["nft", "legacy"] = "nft"
    ipvs_scheduler: str = "rr"
    node_port_range: str = "30000-32767"
    # how long a node may be down before its pods are evicted and rescheduled
    pod_eviction_timeout_seconds: float = 5.0
    uplink: Optional[str] = None
    seed: int = 0
    # kubelet's crash-loop back-off: first restart at once, then base, 2x base, ... up to max
    restart_backoff_seconds: float = 10.0
    restart_backoff_max_seconds: float = 300.0
    # the ingress-nginx controller (namespace ingress-nginx): true, false, or unset = when the lab has
    # an Ingress or a Service selecting app.kubernetes.io/name=ingress-nginx
    ingress: Optional[bool] = None
    # metrics-server's --metric-resolution: how often pods' cgroups are sampled for top and the HPA
    metric_resolution_seconds: float = 15.0
    # kube-controller-manager's --horizontal-pod-autoscaler-* flags
    hpa_sync_period_seconds: float = 15.0
    hpa_downscale_stabilization_seconds: float = 300.0
    hpa_tolerance: float = 0.1
    hpa_cpu_initialization_period_seconds: float = 300.0
    hpa_initial_readiness_delay_seconds: float = 30.0

    @model_validator(mode="before")
    @classmethod
    def _split_families(cls, data: Any) -> Any:
        from netemu.spec.families import DUAL_KEYS, split_document

        return split_document(data, DUAL_KEYS)


class Lab(K8sModel):
    api_version: str = "netemu.dev/v1alpha1"
    kind: Literal["Lab"] = "Lab"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: LabSpec = Field(default_factory=LabSpec)


# kind -> model, for kinds netemu can build today. Later issues add Ingress, HPA, MetalLB CRDs.
KINDS: dict[str, type[K8sModel]] = {
    "Pod": Pod,
    "Deployment": Deployment,
    "ReplicaSet": ReplicaSet,
    "Service": Service,
    "EndpointSlice": EndpointSlice,
    "Namespace": Namespace,
    "ConfigMap": ConfigMap,
    "Secret": Secret,
    "Node": Node,  # made by the lab from its Lab document; the API updates them (cordon, labels, taints)
    "DaemonSet": DaemonSet,
    "Job": Job,
    "PodDisruptionBudget": PodDisruptionBudget,
}

# kind -> apiVersions accepted for it
API_VERSIONS: dict[str, tuple[str, ...]] = {
    "Pod": ("v1",),
    "Deployment": ("apps/v1",),
    "ReplicaSet": ("apps/v1",),
    "Service": ("v1",),
    "EndpointSlice": ("discovery.k8s.io/v1",),
    "Namespace": ("v1",),
    "ConfigMap": ("v1",),
    "Secret": ("v1",),
    "Node": ("v1",),
    "DaemonSet": ("apps/v1",),
    "Job": ("batch/v1",),
    "PodDisruptionBudget": ("policy/v1",),
    "Lab": ("netemu.dev/v1alpha1",),
}

class StoredObject(K8sModel):
    """An object the lab keeps and serves as written but does not act on (ServiceAccount, Role, Job,
    a CustomResourceDefinition and its objects, ...): see :mod:`netemu.spec.registry`."""

    api_version: str
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)


class _NamespacedKinds(set):
    """Kinds that live in a namespace: the ones listed, and any kind the registry of kinds (built-in
    or from a CustomResourceDefinition) says is namespaced."""

    def __contains__(self, kind) -> bool:
        if set.__contains__(self, kind):
            return True
        from netemu.spec import registry

        res = registry.by_kind(kind)
        return res is not None and res.namespaced


NAMESPACED = _NamespacedKinds({"Pod", "Deployment", "ReplicaSet", "Service", "EndpointSlice", "ConfigMap", "Secret",
                               "Event", "DaemonSet", "Job", "PodDisruptionBudget"})

# kinds defined in their own modules register themselves here (they import this module first)
from netemu.spec import autoscaling as _autoscaling  # noqa: E402,F401
from netemu.spec import ingress as _ingress  # noqa: E402,F401
from netemu.spec import metallb as _metallb  # noqa: E402,F401
