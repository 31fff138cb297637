"""The OpenAPI documents the API server publishes: /openapi/v3 (an index), /openapi/v3/<api|apis/g>/<v>
(one document per group/version) and /openapi/v2 (swagger 2.0, every group in one document).

They are generated from the table of kinds (:mod:`netemu.spec.registry`) and the typed models
(:mod:`netemu.spec.models` and the modules that register kinds there). What clients do with them:

- kubectl (``--validate=strict``, the default) looks in the group/version document for the PATCH
  operation whose ``x-kubernetes-group-version-kind`` is the object's kind and checks that it declares
  the ``fieldValidation`` query parameter; then it leaves validation to the server. Every POST, PUT and
  PATCH here declares ``dryRun``, ``fieldManager`` and ``fieldValidation`` (PATCH also ``force``).
- ``kubectl explain`` finds the kind from an operation's ``x-kubernetes-group-version-kind`` on the
  resource's path, then the schema in ``components.schemas`` whose ``x-kubernetes-group-version-kind``
  list holds it, and walks ``properties`` (through ``$ref`` and single-element ``allOf``).
- ``kubectl apply`` builds a strategic merge patch from the v3 schema when the PATCH operation
  accepts ``application/strategic-merge-patch+json``. The models are a subset of Kubernetes' types
  (unknown fields are kept, not described), and that patch builder fails on a field the schema does
  not list, so the PATCH operations here do not offer that content type (nor does the v2 document in
  ``consumes``): kubectl then builds the patch from the types compiled into it for built-in kinds,
  and a JSON merge patch for the rest, as it does for custom resources on a real cluster. The server
  still accepts strategic merge patches (``kubectl patch`` sends them without asking).

Schema names are Kubernetes' own (``io.k8s.api.apps.v1.Deployment``, ``io.k8s.apimachinery.pkg.apis.
meta.v1.ObjectMeta``); kinds outside Kubernetes use the reversed group, as the API server names custom
resources (``io.metallb.v1beta1.IPAddressPool``). Kinds without a model (stored kinds, kinds from
CustomResourceDefinitions) get an object schema with apiVersion, kind and metadata that keeps unknown
fields (``x-kubernetes-preserve-unknown-fields``).

Documents are pure functions of the resources given and the registered models, and are cached: the
dicts returned are shared and must not be modified. :func:`v3_document_json` and
:func:`v2_document_json` give the serialized bytes and their hash (the index's ``hash=``, usable as an
ETag).
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
import types
import typing
from typing import Any, Iterable, Literal, Optional, Union

from netemu.spec import registry
from netemu.spec.registry import Resource

REF = "#/components/schemas/"
REF_V2 = "#/definitions/"

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
OBJECT_META = f"{META}.ObjectMeta"
LIST_META = f"{META}.ListMeta"
TIME = f"{META}.Time"
STATUS = f"{META}.Status"
DELETE_OPTIONS = f"{META}.DeleteOptions"
PATCH = f"{META}.Patch"
WATCH_EVENT = f"{META}.WatchEvent"
API_RESOURCE = f"{META}.APIResource"
API_RESOURCE_LIST = f"{META}.APIResourceList"
RAW_EXTENSION = "io.k8s.apimachinery.pkg.runtime.RawExtension"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
SCALE = "io.k8s.api.autoscaling.v1.Scale"
EVICTION = "io.k8s.api.policy.v1.Eviction"
BINDING = "io.k8s.api.core.v1.Binding"

GVK = "x-kubernetes-group-version-kind"
INFO = {"title": "Kubernetes", "version": "unversioned"}
SECURITY_SCHEME = {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header",
                                   "description": "Bearer Token authentication"}}

# what responses are offered in, and what PUT/POST and PATCH bodies may be
RESPONSE_TYPES = ("application/json", "application/yaml")
WATCH_TYPES = ("application/json", "application/yaml", "application/json;stream=watch")
BODY_TYPES = ("*/*",)
# no application/strategic-merge-patch+json: see the module docstring
PATCH_TYPES = ("application/apply-patch+yaml", "application/json-patch+json", "application/merge-patch+json")

_META_GROUP = "meta"  # a pseudo group for the classes named under io.k8s.apimachinery.pkg.apis.meta.v1

# --------------------------------------------------------------------------- descriptions
API_VERSION_DOC = ("APIVersion is the versioned schema of this representation of the object, as group/version "
                   "(v1 for the core group). Servers convert an object they recognize to the version they store, "
                   "and may reject versions they do not serve.")
KIND_DOC = ("Kind is the REST resource this object represents, in CamelCase (Deployment, Service). Servers may "
            "infer it from the endpoint the request was sent to. It cannot be updated.")
METADATA_DOC = ("Standard object metadata: the name, namespace, labels and annotations the client sets, and the "
                "fields the server fills in (uid, resourceVersion, generation, creationTimestamp, ...).")
LIST_METADATA_DOC = "Standard list metadata: the list's resourceVersion and the continue token of a paged list."
SPEC_DOC = "The desired state of the object, as the client declares it."
STATUS_DOC = ("The most recently observed state of the object, written by the system. It may lag behind the spec "
              "and is read-only for clients.")

STORED_NOTE = "netemu keeps this object and serves it as written, but does not act on it"

_KIND_DOCS = {
    "Pod": "A Pod is a group of one or more containers that share one network identity (an IP address and "
           "port space) and are scheduled together onto one node.",
    "Service": "A Service gives a stable virtual IP address and DNS name to the set of pods its label selector "
               "chooses, and spreads connections to them over their ready endpoints.",
    "Endpoints": "Endpoints lists the addresses and ports that back a Service (the older form of EndpointSlice).",
    "Node": "A Node is a machine (here: a network namespace of the lab) that runs pods.",
    "Namespace": "A Namespace is a scope for names: most objects live in one, and a name need only be unique "
                 "within its namespace.",
    "ConfigMap": "A ConfigMap holds non-confidential configuration as key-value pairs, for pods to read as "
                 "environment variables, command arguments or files.",
    "Secret": "A Secret holds a small amount of confidential data, such as a password, a token or a key. Values "
              "in data are base64-encoded; stringData takes plain text.",
    "Event": "An Event reports something that happened to an object: a pod scheduled, a container started, a "
             "probe failed, a replica set scaled.",
    "ServiceAccount": "A ServiceAccount is an identity for the processes that run in pods.",
    "PersistentVolumeClaim": "A PersistentVolumeClaim is a request for storage, bound to a PersistentVolume "
                             "that satisfies it.",
    "PersistentVolume": "A PersistentVolume is a piece of storage provisioned for the cluster.",
    "ResourceQuota": "A ResourceQuota limits the total amount of resources the objects of a namespace may use.",
    "LimitRange": "A LimitRange sets default and allowed resource requests and limits for the containers of a "
                  "namespace.",
    "ReplicationController": "A ReplicationController keeps a number of pod replicas running (superseded by "
                             "ReplicaSet and Deployment).",
    "PodTemplate": "A PodTemplate is a stored template for creating pods.",
    "ComponentStatus": "ComponentStatus reports the health of a control-plane component (deprecated).",
    "Deployment": "A Deployment declares the desired state of a set of identical pods. It manages ReplicaSets: "
                  "changing the pod template rolls the pods out gradually to a new ReplicaSet.",
    "ReplicaSet": "A ReplicaSet keeps a given number of pods that match its selector running, creating them "
                  "from its pod template.",
    "DaemonSet": "A DaemonSet runs one copy of a pod on every node (or on the nodes its template selects).",
    "StatefulSet": "A StatefulSet manages pods with stable names and storage, created, scaled and updated in "
                   "order.",
    "ControllerRevision": "A ControllerRevision is an immutable snapshot of a controller's state, kept for "
                          "rollbacks.",
    "Job": "A Job runs pods until a given number of them have completed successfully.",
    "CronJob": "A CronJob creates Jobs on a repeating schedule.",
    "HorizontalPodAutoscaler": "A HorizontalPodAutoscaler scales a workload (a Deployment or a ReplicaSet) "
                               "between a minimum and a maximum number of replicas, to keep the metrics it "
                               "watches (such as average CPU utilization) at their targets.",
    "PodDisruptionBudget": "A PodDisruptionBudget limits how many pods of a set may be down at once during "
                           "voluntary disruptions, such as draining a node.",
    "EndpointSlice": "An EndpointSlice lists some of the endpoints that back a Service: their addresses, "
                     "readiness, node and the ports they serve.",
    "Ingress": "An Ingress routes HTTP and HTTPS traffic from outside the cluster to Services, by host name "
               "and path.",
    "IngressClass": "An IngressClass names the controller that implements the Ingresses of that class.",
    "NetworkPolicy": "A NetworkPolicy restricts the traffic allowed to and from the pods it selects.",
    "Role": "A Role is a set of permissions (rules over resources and verbs) within one namespace.",
    "ClusterRole": "A ClusterRole is a set of permissions over cluster-scoped resources or across all "
                   "namespaces.",
    "RoleBinding": "A RoleBinding grants the permissions of a Role or ClusterRole to users, groups or service "
                   "accounts within one namespace.",
    "ClusterRoleBinding": "A ClusterRoleBinding grants the permissions of a ClusterRole to users, groups or "
                          "service accounts across the cluster.",
    "StorageClass": "A StorageClass describes a kind of storage that PersistentVolumes can be provisioned from.",
    "CSIDriver": "A CSIDriver describes a Container Storage Interface volume driver installed in the cluster.",
    "PriorityClass": "A PriorityClass maps a name to the scheduling priority of the pods that use it.",
    "Lease": "A Lease is a lightweight lock, used for leader election and node heartbeats.",
    "RuntimeClass": "A RuntimeClass selects the container runtime configuration pods run with.",
    "ValidatingWebhookConfiguration": "A ValidatingWebhookConfiguration lists admission webhooks that may "
                                      "accept or reject requests.",
    "MutatingWebhookConfiguration": "A MutatingWebhookConfiguration lists admission webhooks that may change "
                                    "objects before they are stored.",
    "CustomResourceDefinition": "A CustomResourceDefinition adds a resource (a kind with its names, scope and "
                                "versions) to the API server.",
    "APIService": "An APIService tells the API server which server answers for a group/version.",
    "CertificateSigningRequest": "A CertificateSigningRequest asks for a certificate to be signed by a named "
                                 "signer.",
    "FlowSchema": "A FlowSchema classifies requests into priority levels for API Priority and Fairness.",
    "PriorityLevelConfiguration": "A PriorityLevelConfiguration sets how much of the API server's capacity a "
                                  "priority level gets.",
    "IPAddressPool": "An IPAddressPool is a set of IP addresses MetalLB assigns to Services of type "
                     "LoadBalancer.",
    "L2Advertisement": "An L2Advertisement tells MetalLB to announce the addresses of the selected pools on the "
                       "local network, answering ARP (IPv4) and NDP (IPv6) from one node per address.",
    "BGPPeer": "A BGPPeer is a router MetalLB speaks BGP with.",
    "BGPAdvertisement": "A BGPAdvertisement tells MetalLB how to announce the addresses of the selected pools "
                        "to its BGP peers.",
    "BFDProfile": "A BFDProfile holds the Bidirectional Forwarding Detection settings of BGP sessions.",
    "Community": "A Community names BGP community values for MetalLB's advertisements.",
    "ServiceL2Status": "A ServiceL2Status reports which node announces a Service's address in layer 2 mode.",
    "PodMetrics": "PodMetrics is the CPU and memory usage of a pod's containers, as metrics-server measures it.",
    "NodeMetrics": "NodeMetrics is the CPU and memory usage of a node, as metrics-server measures it.",
}

# descriptions of nested types, by model class name
_CLASS_DOCS = {
    "ObjectMeta": "ObjectMeta is the metadata every persisted object has.",
    "OwnerReference": "OwnerReference names an object that owns this one: when the owner is deleted, the "
                      "garbage collector deletes the objects it owns.",
    "LabelSelector": "A label selector is a query over labels. matchLabels and matchExpressions are ANDed; an "
                     "empty selector matches every object, a missing one matches none.",
    "LabelSelectorRequirement": "A requirement on one label: a key, an operator and values.",
    "Condition": "Condition is one aspect of an object's current state.",
    "PodTemplateSpec": "PodTemplateSpec describes the pods a controller creates: their metadata and spec.",
    "PodSpec": "PodSpec is the description of a pod: its containers and how it runs.",
    "PodStatus": "PodStatus is the most recently observed state of a pod.",
    "Container": "A single application container that runs in a pod.",
    "ContainerPort": "A network port a container listens on.",
    "EnvVar": "An environment variable set in a container.",
    "EnvVarSource": "Where an environment variable's value comes from.",
    "Probe": "A health check the kubelet runs against a container, by HTTP GET, TCP connect or a command.",
    "ResourceRequirements": "The compute resources a container requests and is limited to.",
    "ContainerStatus": "The current state of one container of a pod.",
    "DeploymentSpec": "DeploymentSpec is the desired state of a Deployment.",
    "DeploymentStatus": "DeploymentStatus is the most recently observed state of a Deployment.",
    "DeploymentStrategy": "How a Deployment replaces old pods with new ones.",
    "ReplicaSetSpec": "ReplicaSetSpec is the desired state of a ReplicaSet.",
    "ReplicaSetStatus": "ReplicaSetStatus is the most recently observed state of a ReplicaSet.",
    "ServiceSpec": "ServiceSpec describes the attributes a user creates on a Service.",
    "ServicePort": "A port a Service exposes, and where its connections go.",
    "ServiceStatus": "ServiceStatus is the current state of a Service (its load balancer).",
    "LoadBalancerStatus": "The load balancer in front of a Service.",
    "LoadBalancerIngress": "An address of a Service's load balancer.",
    "NodeSpec": "NodeSpec describes the attributes a node is created with.",
    "NodeStatus": "NodeStatus is the most recently observed state of a node.",
    "IPAddressPoolSpec": "The addresses of a pool and how MetalLB hands them out.",
    "L2AdvertisementSpec": "Which pools MetalLB announces in layer 2 mode, from which nodes and interfaces.",
    "IngressSpec": "IngressSpec describes the routing rules of an Ingress.",
    "IngressRule": "The routes for one host name (or for every host when host is empty).",
    "HTTPIngressPath": "A path and the backend its requests go to.",
    "IngressBackend": "Where an Ingress sends requests: a Service port or a resource.",
    "HorizontalPodAutoscalerSpec": "HorizontalPodAutoscalerSpec is the desired behaviour of an autoscaler.",
    "HorizontalPodAutoscalerStatus": "HorizontalPodAutoscalerStatus is the current state of an autoscaler.",
    "MetricSpec": "A metric the autoscaler scales on, and its target.",
    "MetricTarget": "The target value of a metric: a utilization, a value or an average value.",
    "CrossVersionObjectReference": "A reference to the object the autoscaler scales.",
    "Endpoint": "One endpoint of a Service: its addresses and conditions.",
}

# field descriptions by (model class name, field alias); _FIELD_DOCS_ANY by alias alone
_FIELD_DOCS = {
    ("DeploymentSpec", "replicas"): "Number of desired pods. This is a pointer to distinguish between explicit "
                                    "zero and not specified. Defaults to 1.",
    ("DeploymentSpec", "selector"): "Label selector for pods. Existing ReplicaSets whose pods are selected by "
                                    "this will be the ones affected by this deployment. It must match the pod "
                                    "template's labels.",
    ("DeploymentSpec", "template"): "Template describes the pods that will be created.",
    ("DeploymentSpec", "strategy"): "The deployment strategy to use to replace existing pods with new ones.",
    ("DeploymentSpec", "minReadySeconds"): "Minimum number of seconds for which a newly created pod should be "
                                           "ready without any of its containers crashing, for it to be "
                                           "considered available. Defaults to 0.",
    ("DeploymentSpec", "revisionHistoryLimit"): "The number of old ReplicaSets to keep to allow rollback. "
                                                "Defaults to 10.",
    ("DeploymentSpec", "progressDeadlineSeconds"): "The maximum time in seconds for a deployment to make "
                                                   "progress before it is considered failed. Defaults to 600.",
    ("DeploymentSpec", "paused"): "Indicates that the deployment is paused: changes to the template are not "
                                  "rolled out.",
    ("DeploymentStatus", "replicas"): "Total number of non-terminated pods targeted by this deployment (their "
                                      "labels match the selector).",
    ("DeploymentStatus", "updatedReplicas"): "Total number of non-terminated pods targeted by this deployment "
                                             "that have the desired template spec.",
    ("DeploymentStatus", "readyReplicas"): "Total number of pods targeted by this deployment with a Ready "
                                           "condition.",
    ("DeploymentStatus", "availableReplicas"): "Total number of available pods (ready for at least "
                                               "minReadySeconds) targeted by this deployment.",
    ("DeploymentStatus", "unavailableReplicas"): "Total number of unavailable pods targeted by this deployment.",
    ("DeploymentStrategy", "type"): "Type of deployment: Recreate or RollingUpdate (the default).",
    ("DeploymentStrategy", "rollingUpdate"): "Rolling update parameters, present only if type is RollingUpdate: "
                                             "maxSurge and maxUnavailable, each a number of pods or a percentage "
                                             "(both default to 25%).",
    ("ReplicaSetSpec", "replicas"): "Replicas is the number of desired pods. Defaults to 1.",
    ("ReplicaSetSpec", "selector"): "Selector is a label query over pods that should match the replica count. "
                                    "It must match the pod template's labels.",
    ("ReplicaSetSpec", "template"): "Template is the object that describes the pod that will be created if "
                                    "insufficient replicas are detected.",
    ("ReplicaSetStatus", "replicas"): "Replicas is the most recently observed number of non-terminated pods.",
    ("ReplicaSetStatus", "readyReplicas"): "The number of pods targeted by this ReplicaSet with a Ready "
                                           "condition.",
    ("ReplicaSetStatus", "availableReplicas"): "The number of available pods (ready for at least "
                                               "minReadySeconds) for this ReplicaSet.",
    ("PodTemplateSpec", "metadata"): "Standard object metadata of the pods created from this template.",
    ("PodTemplateSpec", "spec"): "Specification of the desired behavior of the pod.",
    ("PodSpec", "containers"): "List of containers belonging to the pod. There must be at least one. "
                               "Containers cannot currently be added or removed.",
    ("PodSpec", "initContainers"): "List of initialization containers, run in order before the app containers "
                                   "start; each must complete successfully.",
    ("PodSpec", "restartPolicy"): "Restart policy for all containers within the pod: Always (the default), "
                                  "OnFailure or Never.",
    ("PodSpec", "nodeName"): "The node the pod is scheduled to. Set by the scheduler; setting it bypasses "
                             "scheduling.",
    ("PodSpec", "nodeSelector"): "Labels a node must have for the pod to be scheduled onto it.",
    ("PodSpec", "tolerations"): "The pod's tolerations of node taints.",
    ("PodSpec", "hostname"): "The hostname of the pod. Defaults to the pod's name.",
    ("PodSpec", "subdomain"): "If set, the pod's fully qualified name is <hostname>.<subdomain>.<namespace>."
                              "svc.<cluster domain> (with a headless Service of that name).",
    ("PodSpec", "dnsPolicy"): "How the pod's DNS is set up: ClusterFirst (the default), "
                              "ClusterFirstWithHostNet, Default or None.",
    ("PodSpec", "dnsConfig"): "DNS parameters of the pod, merged into the configuration dnsPolicy generates.",
    ("PodSpec", "hostNetwork"): "The pod uses the node's network namespace. Defaults to false.",
    ("PodSpec", "terminationGracePeriodSeconds"): "Seconds the pod is given to terminate gracefully after it "
                                                  "is asked to stop, before its processes are killed. "
                                                  "Defaults to 30.",
    ("PodSpec", "priorityClassName"): "The PriorityClass of the pod.",
    ("PodSpec", "serviceAccountName"): "The ServiceAccount the pod runs as.",
    ("PodStatus", "phase"): "A simple, high-level summary of where the pod is in its lifecycle: Pending, "
                            "Running, Succeeded, Failed or Unknown.",
    ("PodStatus", "hostIP"): "The IP address of the node the pod is running on.",
    ("PodStatus", "podIP"): "The IP address allocated to the pod.",
    ("PodStatus", "podIPs"): "The IP addresses allocated to the pod; the first is podIP.",
    ("PodStatus", "startTime"): "When the pod was acknowledged by the kubelet, before its images were pulled.",
    ("PodStatus", "containerStatuses"): "The current state of each container of the pod.",
    ("Container", "name"): "Name of the container, unique within the pod (a DNS label).",
    ("Container", "image"): "Container image name.",
    ("Container", "command"): "Entrypoint array, run without a shell. Defaults to the image's ENTRYPOINT.",
    ("Container", "args"): "Arguments to the entrypoint. Defaults to the image's CMD.",
    ("Container", "workingDir"): "The container's working directory. Defaults to the image's.",
    ("Container", "env"): "Environment variables to set in the container.",
    ("Container", "ports"): "Ports the container exposes. Informational: any port the container listens on "
                            "is reachable.",
    ("Container", "resources"): "Compute resources the container requests and is limited to.",
    ("Container", "readinessProbe"): "Periodic probe of container service readiness. The container is removed "
                                     "from Service endpoints if the probe fails.",
    ("Container", "livenessProbe"): "Periodic probe of container liveness. The container is restarted if the "
                                    "probe fails.",
    ("Container", "startupProbe"): "Probe that must succeed before the other probes run.",
    ("Container", "imagePullPolicy"): "When to pull the image: Always, Never or IfNotPresent.",
    ("ContainerPort", "containerPort"): "Number of the port to expose on the pod's IP address (1-65535).",
    ("ContainerPort", "protocol"): "Protocol of the port: TCP (the default), UDP or SCTP.",
    ("ContainerPort", "name"): "A name for the port (an IANA_SVC_NAME), unique within the pod, that Services "
                               "can refer to.",
    ("ContainerPort", "hostPort"): "Number of the port to expose on the host.",
    ("EnvVar", "name"): "Name of the environment variable.",
    ("EnvVar", "value"): "Value of the variable; $(VAR) references to earlier variables are expanded.",
    ("EnvVar", "valueFrom"): "Source of the variable's value. Cannot be used if value is not empty.",
    ("Probe", "httpGet"): "An HTTP GET request to perform.",
    ("Probe", "tcpSocket"): "A TCP port to connect to.",
    ("Probe", "exec"): "A command to run in the container.",
    ("Probe", "initialDelaySeconds"): "Seconds after the container starts before probes are initiated.",
    ("Probe", "periodSeconds"): "How often (in seconds) to perform the probe. Defaults to 10.",
    ("Probe", "timeoutSeconds"): "Seconds after which the probe times out. Defaults to 1.",
    ("Probe", "failureThreshold"): "Consecutive failures for the probe to be considered failed. Defaults to 3.",
    ("Probe", "successThreshold"): "Consecutive successes for the probe to be considered successful after "
                                   "having failed. Defaults to 1.",
    ("ResourceRequirements", "requests"): "The minimum amount of each compute resource required (cpu, memory).",
    ("ResourceRequirements", "limits"): "The maximum amount of each compute resource allowed (cpu, memory).",
    ("ServiceSpec", "type"): "How the Service is exposed: ClusterIP (the default), NodePort, LoadBalancer or "
                             "ExternalName.",
    ("ServiceSpec", "selector"): "Route service traffic to pods with label keys and values matching this "
                                 "selector. If empty or not present, the Service's endpoints are managed by "
                                 "someone else.",
    ("ServiceSpec", "ports"): "The list of ports that are exposed by this service.",
    ("ServiceSpec", "clusterIP"): "The IP address of the service, allocated from the service CIDR unless "
                                  "given. None makes a headless service.",
    ("ServiceSpec", "clusterIPs"): "The IP addresses of the service; the first is clusterIP.",
    ("ServiceSpec", "externalIPs"): "IP addresses for which nodes also accept traffic for this service.",
    ("ServiceSpec", "externalName"): "The DNS name an ExternalName service is an alias (CNAME) of.",
    ("ServiceSpec", "sessionAffinity"): "None (the default) or ClientIP: send a client's connections to the "
                                        "same endpoint.",
    ("ServiceSpec", "sessionAffinityConfig"): "The settings of session affinity.",
    ("ServiceSpec", "loadBalancerIP"): "The address requested for a LoadBalancer service (deprecated).",
    ("ServiceSpec", "loadBalancerSourceRanges"): "Client address ranges allowed to reach a LoadBalancer "
                                                 "service.",
    ("ServiceSpec", "loadBalancerClass"): "The class of load balancer implementation this service belongs to.",
    ("ServiceSpec", "allocateLoadBalancerNodePorts"): "Whether node ports are allocated for a LoadBalancer "
                                                      "service. Defaults to true.",
    ("ServiceSpec", "externalTrafficPolicy"): "How traffic from outside the cluster is routed: Cluster (the "
                                              "default, to any ready endpoint) or Local (only to endpoints on "
                                              "the receiving node, keeping the client's address).",
    ("ServiceSpec", "internalTrafficPolicy"): "How traffic from inside the cluster is routed: Cluster (the "
                                              "default) or Local (only to endpoints on the same node).",
    ("ServiceSpec", "healthCheckNodePort"): "The node port answering health checks for a LoadBalancer service "
                                            "with externalTrafficPolicy Local.",
    ("ServiceSpec", "publishNotReadyAddresses"): "Publish the addresses of endpoints that are not ready.",
    ("ServiceSpec", "ipFamilies"): "The IP families (IPv4, IPv6) of the service's addresses.",
    ("ServiceSpec", "ipFamilyPolicy"): "SingleStack, PreferDualStack or RequireDualStack.",
    ("ServicePort", "name"): "The name of this port within the service. Required when there are several.",
    ("ServicePort", "protocol"): "The IP protocol for this port: TCP (the default), UDP or SCTP.",
    ("ServicePort", "appProtocol"): "The application protocol of this port, as a hint.",
    ("ServicePort", "port"): "The port that will be exposed by this service.",
    ("ServicePort", "targetPort"): "Number or name of the port to access on the pods targeted by the service. "
                                   "A name is looked up in the target pod's container ports. Defaults to port.",
    ("ServicePort", "nodePort"): "The port on each node on which this service is exposed when type is "
                                 "NodePort or LoadBalancer. Allocated from the node port range unless given.",
    ("ServiceStatus", "loadBalancer"): "The current status of the load balancer, if one is present.",
    ("LabelSelector", "matchLabels"): "A map of {key,value} pairs; each is a requirement that the label key "
                                      "has that value.",
    ("LabelSelector", "matchExpressions"): "A list of label selector requirements. The requirements are ANDed.",
    ("LabelSelectorRequirement", "key"): "The label key the selector applies to.",
    ("LabelSelectorRequirement", "operator"): "The key's relationship to the values: In, NotIn, Exists or "
                                              "DoesNotExist.",
    ("LabelSelectorRequirement", "values"): "The values; empty for Exists and DoesNotExist.",
    ("ConfigMap", "data"): "The configuration data, as UTF-8 strings.",
    ("ConfigMap", "binaryData"): "Binary configuration data, base64-encoded.",
    ("Secret", "data"): "The secret data, each value base64-encoded.",
    ("Secret", "stringData"): "Secret data as plain strings, merged into data on write (write-only).",
    ("Secret", "type"): "Used to facilitate programmatic handling of secret data (Opaque by default).",
    ("HorizontalPodAutoscalerSpec", "scaleTargetRef"): "The workload to scale: its kind, name and apiVersion.",
    ("HorizontalPodAutoscalerSpec", "minReplicas"): "The lower limit of replicas. Defaults to 1.",
    ("HorizontalPodAutoscalerSpec", "maxReplicas"): "The upper limit of replicas. Cannot be less than "
                                                    "minReplicas.",
    ("HorizontalPodAutoscalerSpec", "metrics"): "The metrics used to calculate the desired replica count "
                                                "(autoscaling/v2). Defaults to 80% average CPU utilization.",
    ("HorizontalPodAutoscalerSpec", "behavior"): "How fast to scale up and down (autoscaling/v2).",
    ("HorizontalPodAutoscalerSpec", "targetCPUUtilizationPercentage"): "Target average CPU utilization, as a "
                                                                       "percentage of requested CPU "
                                                                       "(autoscaling/v1).",
    ("IPAddressPoolSpec", "addresses"): "The addresses of the pool: CIDRs (192.168.1.0/24) or ranges "
                                        "(192.168.1.10-192.168.1.20).",
    ("IPAddressPoolSpec", "autoAssign"): "Whether addresses are assigned from this pool automatically. "
                                         "Defaults to true.",
    ("IPAddressPoolSpec", "avoidBuggyIPs"): "Avoid addresses ending in .0 and .255. Defaults to false.",
    ("IPAddressPoolSpec", "serviceAllocation"): "Which services this pool is for, and its priority.",
    ("L2AdvertisementSpec", "ipAddressPools"): "The pools to announce, by name. Empty: all pools.",
    ("L2AdvertisementSpec", "ipAddressPoolSelectors"): "The pools to announce, by label.",
    ("L2AdvertisementSpec", "nodeSelectors"): "The nodes that may announce the addresses. Empty: all nodes.",
    ("L2AdvertisementSpec", "interfaces"): "The interfaces to announce from. Empty: all.",
    ("IngressSpec", "ingressClassName"): "The name of the IngressClass that implements this Ingress.",
    ("IngressSpec", "defaultBackend"): "The backend for requests no rule matches.",
    ("IngressSpec", "rules"): "Host rules. Requests matching none go to the default backend.",
    ("IngressSpec", "tls"): "TLS configuration: hosts and the Secret holding their certificate.",
    ("HTTPIngressPath", "path"): "The path matched against the request's path.",
    ("HTTPIngressPath", "pathType"): "How path matches: Exact, Prefix (by path elements) or "
                                     "ImplementationSpecific.",
    ("HTTPIngressPath", "backend"): "Where matching requests go.",
    ("EndpointSlice", "addressType"): "The type of the addresses in this slice: IPv4, IPv6 or FQDN.",
    ("EndpointSlice", "endpoints"): "The endpoints of this slice.",
    ("EndpointSlice", "ports"): "The ports every endpoint of this slice serves.",
}

_FIELD_DOCS_ANY = {
    "apiVersion": API_VERSION_DOC,
    "kind": KIND_DOC,
    "metadata": METADATA_DOC,
    "spec": SPEC_DOC,
    "status": STATUS_DOC,
    "name": "Name is unique within a namespace (or the cluster, for cluster-scoped kinds). It cannot be "
            "updated.",
    "generateName": "A prefix the server uses to generate a unique name when name is not given.",
    "namespace": "The namespace the object lives in. Empty means default; cluster-scoped objects have none.",
    "labels": "Map of string keys and values that can be used to organize and categorize (scope and select) "
              "objects.",
    "annotations": "Unstructured key value map stored with an object, for tools to store and retrieve "
                   "arbitrary metadata. Not queryable.",
    "uid": "The unique identifier of this object in time and space, set by the server on creation.",
    "resourceVersion": "An opaque value that changes on every change of the object, for optimistic "
                       "concurrency, change detection and watches.",
    "generation": "A sequence number of changes to the desired state, set by the server.",
    "creationTimestamp": "When the object was created, set by the server.",
    "deletionTimestamp": "When the object will be deleted (after its grace period), set by the server when "
                         "deletion is requested.",
    "ownerReferences": "The objects this object depends on. When all of them are deleted, this object is "
                       "garbage collected.",
    "observedGeneration": "The generation of the desired state the controller last acted on.",
    "conditions": "The latest available observations of the object's state.",
}

# patch metadata of list fields, as Kubernetes declares it (by model class name, field alias)
def _MERGE(key: str, *keys: str) -> dict:
    return {"x-kubernetes-list-map-keys": [key, *keys], "x-kubernetes-list-type": "map",
            "x-kubernetes-patch-merge-key": key, "x-kubernetes-patch-strategy": "merge"}


_ATOMIC = {"x-kubernetes-list-type": "atomic"}
_PATCH_META = {
    ("ObjectMeta", "ownerReferences"): _MERGE("uid"),
    ("PodSpec", "containers"): _MERGE("name"),
    ("PodSpec", "initContainers"): _MERGE("name"),
    ("PodSpec", "tolerations"): _ATOMIC,
    ("Container", "env"): _MERGE("name"),
    ("Container", "ports"): {**_MERGE("containerPort", "protocol"), "x-kubernetes-patch-merge-key": "containerPort"},
    ("ServiceSpec", "ports"): {**_MERGE("port", "protocol"), "x-kubernetes-patch-merge-key": "port"},
    ("ServiceSpec", "clusterIPs"): _ATOMIC,
    ("PodStatus", "conditions"): _MERGE("type"),
    ("PodStatus", "podIPs"): _MERGE("ip"),
    ("NodeStatus", "conditions"): _MERGE("type"),
    ("NodeStatus", "addresses"): _MERGE("type"),
    ("DeploymentStatus", "conditions"): _MERGE("type"),
    ("DeploymentSpec", "strategy"): {"x-kubernetes-patch-strategy": "retainKeys"},
    ("LabelSelector", "matchExpressions"): _ATOMIC,
}

# --------------------------------------------------------------------------- naming
# the Kubernetes package of model classes whose module is not enough to tell ("<module>.<Class>")
_CLASS_GROUP = {
    **{f"models.{c}": _META_GROUP for c in ("ObjectMeta", "OwnerReference", "LabelSelector",
                                            "LabelSelectorRequirement", "Condition")},
    **{f"models.{c}": "apps" for c in ("Deployment", "DeploymentSpec", "DeploymentStatus", "DeploymentStrategy",
                                       "ReplicaSet", "ReplicaSetSpec", "ReplicaSetStatus")},
    **{f"models.{c}": "discovery.k8s.io" for c in ("EndpointSlice", "Endpoint", "EndpointConditions",
                                                   "EndpointPort")},
    "ingress.TypedLocalObjectReference": "",
}
_MODULE_GROUP = {"netemu.spec.models": "", "netemu.spec.ingress": "networking.k8s.io",
                 "netemu.spec.autoscaling": "autoscaling", "netemu.spec.metallb": "metallb.io"}
# groups whose Go packages are not io.k8s.api.<first label>
_PACKAGES = {"apiextensions.k8s.io": "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions",
             "apiregistration.k8s.io": "io.k8s.kube-aggregator.pkg.apis.apiregistration",
             "metrics.k8s.io": "io.k8s.metrics.pkg.apis.metrics"}

_INT64 = {"generation", "observedGeneration", "terminationGracePeriodSeconds", "tolerationSeconds",
          "gracePeriodSeconds", "remainingItemCount", "activeDeadlineSeconds"}
_TIMES = {"creationTimestamp", "deletionTimestamp", "lastTransitionTime", "lastProbeTime", "lastScaleTime",
          "startTime", "startedAt", "finishedAt", "firstTimestamp", "lastTimestamp", "lastUpdateTime",
          "lastHeartbeatTime", "eventTime"}


def package(group: str, version: str, builtin: bool = True) -> str:
    """The schema-name prefix of a group/version: io.k8s.api.apps.v1, io.metallb.v1beta1, com.example.v1."""
    if group in _PACKAGES:
        return f"{_PACKAGES[group]}.{version}"
    if builtin and (group == "" or "." not in group or group.endswith(".k8s.io")):
        return f"io.k8s.api.{group.split('.')[0] or 'core'}.{version}"
    return ".".join(reversed(group.split("."))) + f".{version}"


def gv_path(group: str, version: str) -> str:
    """The key of a group/version in the /openapi/v3 index: api/v1, apis/apps/v1."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _preferred_version(group: str) -> str:
    return next((r.version for r in registry.BUILTIN if r.group == group), "v1")


def _camel(group: str) -> str:
    if not group:
        return "Core"
    if group.endswith(".k8s.io"):
        group = group[: -len(".k8s.io")]
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[.\-]", group) if p)


def _tag(group: str, version: str) -> str:
    c = _camel(group)
    return f"{c[:1].lower()}{c[1:]}_{version}"


def _gvk(group: str, version: str, kind: str) -> dict:
    return {"group": group, "kind": kind, "version": version}


def _ref(name: str) -> dict:
    return {"$ref": REF + name}


def _described(schema: dict, description: Optional[str], extra: Optional[dict] = None) -> dict:
    """A field's schema with its description: a bare $ref is wrapped in allOf (siblings of $ref are ignored
    in OpenAPI 3.0), as the API server does."""
    if not description and not extra:
        return schema
    if "$ref" in schema:
        schema = {"allOf": [schema]}
    if description:
        schema["description"] = description
    if extra:
        schema.update(extra)
    return schema


def _string(description: Optional[str] = None) -> dict:
    return _described({"type": "string"}, description)


# --------------------------------------------------------------------------- fixed schemas
def _object(description: str, properties: dict, required: Iterable[str] = (), gvk: Optional[dict] = None) -> dict:
    out = {"description": description, "type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    if gvk:
        out[GVK] = [gvk]
    return out


def _typemeta() -> dict:
    return {"apiVersion": _string(API_VERSION_DOC), "kind": _string(KIND_DOC)}


_INT_OR_STRING_DOC = ("IntOrString holds either an integer or a string: a port number or a port name, a count or "
                      "a percentage.")
_QUANTITY_DOC = ("Quantity is a fixed-point number with an optional suffix: decimal SI (m, k, M, G, ...), binary "
                 "SI (Ki, Mi, Gi, ...) or an exponent (1e3). Examples: 100m (0.1), 0.5, 128Mi, 2Gi.")


def _fixed_schemas(object_reference: str) -> dict[str, dict]:
    """The apimachinery types and the few subresource kinds every document may refer to (v3 form)."""
    int32 = {"type": "integer", "format": "int32"}
    int64 = {"type": "integer", "format": "int64"}
    strings = {"type": "array", "items": {"type": "string"}}
    return {
        TIME: {"description": "Time is a timestamp in RFC 3339 form, in UTC with second precision "
                              "(2024-01-02T15:04:05Z).", "type": "string", "format": "date-time"},
        INT_OR_STRING: {"description": _INT_OR_STRING_DOC, "format": "int-or-string", "oneOf": [{"type": "integer"}, {"type": "string"}],
                        "x-kubernetes-int-or-string": True},
        QUANTITY: {"description": _QUANTITY_DOC, "oneOf": [{"type": "string"}, {"type": "number"}]},
        RAW_EXTENSION: {"description": "An embedded object of any kind.", "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True},
        PATCH: {"description": "The body of a PATCH request: a JSON patch, a JSON merge patch, a strategic "
                               "merge patch or an apply configuration, as its Content-Type says.",
                "type": "object"},
        LIST_META: _object("ListMeta is the metadata of lists: their resourceVersion and paging.", {
            "continue": _string("Set when the list was cut at the limit: pass it back to get the next part."),
            "remainingItemCount": _described(dict(int64), "The number of items after this part, when known."),
            "resourceVersion": _string("The version of the list, to watch for changes from."),
            "selfLink": _string("Deprecated; not set."),
        }),
        STATUS: _object("Status is the result of an operation that does not return an object, and of every "
                        "failed request.", {
                            **_typemeta(),
                            "code": _described(dict(int32), "The HTTP status code of this status."),
                            "details": _described({"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                                  "More data about the reason: the object's name, kind and "
                                                  "the causes of a validation error."),
                            "message": _string("A human-readable description of the status."),
                            "metadata": _described(_ref(LIST_META), LIST_METADATA_DOC),
                            "reason": _string("A machine-readable reason (NotFound, AlreadyExists, Conflict, "
                                              "Invalid, ...). Empty when there is none."),
                            "status": _string("Success or Failure."),
                        }, gvk=_gvk("", "v1", "Status")),
        DELETE_OPTIONS: _object("DeleteOptions may be sent when deleting an object.", {
            **_typemeta(),
            "dryRun": _described(dict(strings), "All: process the request without persisting anything."),
            "gracePeriodSeconds": _described(dict(int64), "Seconds to wait before the object is deleted; 0 "
                                                          "deletes at once. Defaults to the kind's grace period."),
            "orphanDependents": _described({"type": "boolean"}, "Deprecated: use propagationPolicy."),
            "preconditions": _described({"type": "object", "properties": {
                "resourceVersion": _string("The object's resourceVersion must be this."),
                "uid": _string("The object's uid must be this.")}}, "Conditions the object must meet to be "
                                                                     "deleted; 409 Conflict otherwise."),
            "propagationPolicy": _string("What happens to the objects this one owns: Orphan, Background or "
                                         "Foreground."),
        }),
        WATCH_EVENT: _object("An event of a watch stream.", {
            "object": _described(_ref(RAW_EXTENSION), "The object: for ADDED and MODIFIED its new state, for "
                                                      "DELETED its last state, for BOOKMARK its resourceVersion "
                                                      "only, for ERROR a Status."),
            "type": _string("ADDED, MODIFIED, DELETED, BOOKMARK or ERROR."),
        }, required=("type", "object")),
        API_RESOURCE: _object("APIResource describes one resource of a group/version.", {
            "categories": _described(dict(strings), "The groups of resources it belongs to (all)."),
            "group": _string("The group, for a subresource of another group."),
            "kind": _string("The kind of its objects."),
            "name": _string("The plural name of the resource."),
            "namespaced": _described({"type": "boolean"}, "Whether its objects live in namespaces."),
            "shortNames": _described(dict(strings), "Short names kubectl accepts for it."),
            "singularName": _string("The singular name of the resource."),
            "verbs": _described(dict(strings), "The verbs it supports (get, list, watch, create, ...)."),
            "version": _string("The version, for a subresource of another version."),
        }, required=("name", "singularName", "namespaced", "kind", "verbs")),
        API_RESOURCE_LIST: _object("APIResourceList lists the resources of a group/version.", {
            **_typemeta(),
            "groupVersion": _string("The group/version these resources belong to."),
            "resources": {"description": "The resources.", "type": "array", "items": _ref(API_RESOURCE)},
        }, required=("groupVersion", "resources"), gvk=_gvk("", "v1", "APIResourceList")),
        SCALE: _object("Scale is the scale subresource of a workload: its desired and current replicas.", {
            **_typemeta(),
            "metadata": _described(_ref(OBJECT_META), METADATA_DOC),
            "spec": _described({"type": "object", "properties": {
                "replicas": _described(dict(int32), "The desired number of replicas.")}},
                "The desired number of replicas."),
            "status": _described({"type": "object", "required": ["replicas"], "properties": {
                "replicas": _described(dict(int32), "The current number of replicas."),
                "selector": _string("The label selector of the workload's pods, in string form.")}},
                "The current state."),
        }, gvk=_gvk("autoscaling", "v1", "Scale")),
        EVICTION: _object("Eviction asks for a pod to be deleted, within its PodDisruptionBudgets.", {
            **_typemeta(),
            "deleteOptions": _described(_ref(DELETE_OPTIONS), "How the pod is deleted."),
            "metadata": _described(_ref(OBJECT_META), "The pod's name and namespace."),
        }, gvk=_gvk("policy", "v1", "Eviction")),
        BINDING: _object("Binding assigns a pod to a node (what the scheduler posts).", {
            **_typemeta(),
            "metadata": _described(_ref(OBJECT_META), METADATA_DOC),
            "target": _described(_ref(object_reference), "The node to bind the pod to."),
        }, required=("target",), gvk=_gvk("", "v1", "Binding")),
    }


# v2 has no oneOf: the two scalar unions are strings there, as in the API server's swagger
_V2_OVERRIDES = {
    INT_OR_STRING: {"description": _INT_OR_STRING_DOC, "type": "string", "format": "int-or-string",
                    "x-kubernetes-int-or-string": True},
    QUANTITY: {"description": _QUANTITY_DOC, "type": "string"},
}


# --------------------------------------------------------------------------- parameters
def _param(name: str, where: str, typ: str, description: str, required: bool = False) -> dict:
    out = {"name": name, "in": where, "description": description, "schema": {"type": typ, "uniqueItems": True}}
    if required:
        out["required"] = True
    return out


_Q = {
    "pretty": ("string", "If 'true', the output is indented for reading."),
    "dryRun": ("string", "When present, the request is processed but nothing is persisted. The only valid "
                         "value is All (every dry-run stage)."),
    "fieldManager": ("string", "The name of the actor making the change, recorded in managedFields: at most 128 "
                               "printable characters. Required for apply patches."),
    "fieldValidation": ("string", "How the server handles unknown or duplicate fields in the object sent "
                                  "(POST/PUT/PATCH): Ignore drops them silently; Warn drops them and sends a "
                                  "warning header for each (the default); Strict fails the request with "
                                  "BadRequest, listing them."),
    "force": ("boolean", "Force an apply patch: take over the fields other managers own. Must be unset for "
                         "other patch types."),
    "allowWatchBookmarks": ("boolean", "Ask for BOOKMARK events in a watch; servers may send them or not."),
    "continue": ("string", "The continue token of the previous part of a paged list."),
    "fieldSelector": ("string", "Only objects whose fields match (metadata.name=x, status.phase!=Running). "
                                "Defaults to everything."),
    "labelSelector": ("string", "Only objects whose labels match (app=web,tier in (fe,be)). Defaults to "
                                "everything."),
    "limit": ("integer", "The most items to return; the rest is had with the continue token of the result."),
    "resourceVersion": ("string", "Which version of the data the request may be served from; for a watch, "
                                  "where it starts."),
    "resourceVersionMatch": ("string", "How resourceVersion applies to a list: Exact or NotOlderThan."),
    "sendInitialEvents": ("boolean", "Start a watch with an ADDED event for every existing object, then a "
                                     "BOOKMARK."),
    "timeoutSeconds": ("integer", "Timeout of a list or watch call, whatever the activity."),
    "watch": ("boolean", "Watch for changes to the described resources and return them as a stream of add, "
                         "update and remove notifications."),
    "gracePeriodSeconds": ("integer", "Seconds to wait before the object is deleted; 0 deletes at once."),
    "orphanDependents": ("boolean", "Deprecated: use propagationPolicy."),
    "propagationPolicy": ("string", "What happens to the objects this one owns: Orphan, Background or "
                                    "Foreground."),
    "container": ("string", "The container, when the pod has several."),
    "follow": ("boolean", "Follow the log stream."),
    "insecureSkipTLSVerifyBackend": ("boolean", "Do not verify the kubelet's serving certificate."),
    "limitBytes": ("integer", "The most bytes of log to return."),
    "previous": ("boolean", "The log of the previous, terminated instance of the container."),
    "sinceSeconds": ("integer", "Only the log of the last seconds."),
    "tailLines": ("integer", "Only the last lines of the log."),
    "timestamps": ("boolean", "Prefix every line with its RFC 3339 timestamp."),
    "command": ("string", "The command to run, one argument per parameter."),
    "stdin": ("boolean", "Attach the standard input."),
    "stdout": ("boolean", "Attach the standard output."),
    "stderr": ("boolean", "Attach the standard error."),
    "tty": ("boolean", "Allocate a terminal."),
    "ports": ("integer", "The ports to forward."),
}


def _query(*names: str) -> list[dict]:
    return [_param(n, "query", *_Q[n]) for n in names]


_LIST = ("allowWatchBookmarks", "continue", "fieldSelector", "labelSelector", "limit", "resourceVersion",
         "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds", "watch")
_WRITE = ("dryRun", "fieldManager", "fieldValidation")
_PATCH_Q = (*_WRITE, "force")
_DELETE = ("dryRun", "gracePeriodSeconds", "orphanDependents", "propagationPolicy")
_DELETE_COLLECTION = ("continue", "dryRun", "fieldSelector", "gracePeriodSeconds", "labelSelector", "limit",
                      "orphanDependents", "propagationPolicy", "resourceVersion", "resourceVersionMatch",
                      "sendInitialEvents", "timeoutSeconds")
_LOG = ("container", "follow", "insecureSkipTLSVerifyBackend", "limitBytes", "previous", "sinceSeconds",
        "tailLines", "timestamps")
_EXEC = ("command", "container", "stderr", "stdin", "stdout", "tty")
_ATTACH = ("container", "stderr", "stdin", "stdout", "tty")


def _content(name_or_schema, types_: Iterable[str]) -> dict:
    schema = _ref(name_or_schema) if isinstance(name_or_schema, str) else name_or_schema
    return {t: {"schema": dict(schema)} for t in types_}


def _responses(schema, codes=("200",), types_: Iterable[str] = RESPONSE_TYPES) -> dict:
    names = {"200": "OK", "201": "Created", "202": "Accepted"}
    out = {c: {"description": names[c], "content": _content(schema, types_)} for c in codes}
    out["401"] = {"description": "Unauthorized"}
    return out


# --------------------------------------------------------------------------- models
def _models_key() -> tuple:
    from netemu.spec import models

    return tuple(sorted((k, id(m)) for k, m in models.KINDS.items()))


def model_for(res: Resource):
    """The model of a kind, or None for a stored kind. A model counts only when its kind and apiVersion
    defaults are the resource's (the core and events.k8s.io Events share a kind name)."""
    from netemu.spec import models

    candidates = [models.KINDS.get(res.kind)]
    if res.builtin:
        candidates.append(getattr(models, res.kind, None))  # models the lab has but does not list (Node, Event)
    for model in candidates:
        if not (isinstance(model, type) and issubclass(model, models.K8sModel)):
            continue
        fields = model.model_fields
        kind = fields.get("kind")
        api_version = fields.get("api_version")
        if kind is None or kind.default != res.kind or api_version is None:
            continue
        if isinstance(api_version.default, str) and api_version.default.rpartition("/")[0] == res.group:
            return model
    return None


def _doc(obj) -> Optional[str]:
    d = obj.__dict__.get("__doc__") if isinstance(obj, type) else None
    return " ".join(d.split()) if d else None


class _Build:
    """The schemas of one document: built on demand, named as Kubernetes names them."""

    def __init__(self) -> None:
        from netemu.spec import models

        self.models = models
        self.schemas: dict[str, dict] = {}
        self.owners: dict[str, Any] = {}
        self.schemas.update(_fixed_schemas(self.model(models.ObjectReference, "", "v1")))
        self.model(models.ObjectMeta, "", "v1")

    # ---- model classes
    def _place(self, cls, group: str, version: str) -> tuple[str, str, str]:
        """(schema name, group, version) of a model class met in a document of group/version."""
        key = f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"
        g = _CLASS_GROUP.get(key)
        if g is None:
            g = _MODULE_GROUP.get(cls.__module__, group)
        if g == _META_GROUP:
            return f"{META}.{cls.__name__}", group, version
        v = version if g == group else _preferred_version(g)
        return f"{package(g, v, True)}.{cls.__name__}", g, v

    def model(self, cls, group: str, version: str) -> str:
        name, g, v = self._place(cls, group, version)
        owner = self.owners.get(name)
        if owner is cls:
            return name
        if owner is not None:  # two classes with one name: keep both apart
            name = f"{name}.{cls.__module__.rsplit('.', 1)[-1]}"
            if self.owners.get(name) is cls:
                return name
        self.owners[name] = cls
        self.schemas[name] = {}  # placeholder while the fields are built (a model may refer to itself)
        schema = {"description": _doc(cls) or _CLASS_DOCS.get(cls.__name__), "type": "object",
                  "properties": self._properties(cls, g, v)}
        if schema["description"] is None:
            del schema["description"]
        required = [f.alias or n for n, f in cls.model_fields.items() if f.is_required()]
        if required:
            schema["required"] = required
        self.schemas[name] = schema
        return name

    def _properties(self, cls, group: str, version: str) -> dict:
        props = {}
        for fname, f in cls.model_fields.items():
            alias = f.alias or fname
            schema = self.type_schema(f.annotation, group, version, alias)
            doc = f.description or _FIELD_DOCS.get((cls.__name__, alias)) or _FIELD_DOCS_ANY.get(alias)
            props[alias] = _described(schema, doc, _PATCH_META.get((cls.__name__, alias)))
        return props

    def type_schema(self, ann, group: str, version: str, alias: Optional[str] = None) -> dict:
        from pydantic import BaseModel

        origin = typing.get_origin(ann)
        if ann is Any or ann is object:
            return {"x-kubernetes-preserve-unknown-fields": True}
        if origin is Union or origin is types.UnionType:
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(args) == 1:
                return self.type_schema(args[0], group, version, alias)
            kinds = set(args)
            if float in kinds and kinds <= {int, str, float}:
                return _ref(QUANTITY)
            if kinds == {int, str}:
                return _ref(INT_OR_STRING)
            return {"x-kubernetes-preserve-unknown-fields": True}
        if origin is Literal:
            values = list(typing.get_args(ann))
            typ = {bool: "boolean", int: "integer", float: "number"}.get(type(values[0]), "string")
            return {"type": typ, "enum": values}
        if origin in (list, tuple, set, frozenset) or ann in (list, tuple, set, frozenset):
            args = [a for a in typing.get_args(ann) if a is not Ellipsis]
            if not args:
                return {"type": "array", "items": {"x-kubernetes-preserve-unknown-fields": True}}
            return {"type": "array", "items": self.type_schema(args[0], group, version)}
        if origin is dict or ann is dict:
            args = typing.get_args(ann)
            if len(args) != 2 or args[1] is Any:
                return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            return {"type": "object", "additionalProperties": self.type_schema(args[1], group, version)}
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return _ref(self.model(ann, group, version))
        if ann is bool:
            return {"type": "boolean"}
        if ann is int:
            return {"type": "integer", "format": "int64" if alias in _INT64 else "int32"}
        if ann is float:
            return {"type": "number", "format": "double"}
        if ann is str and alias in _TIMES:
            return _ref(TIME)
        return {"type": "string"}

    # ---- kinds
    def kind(self, res: Resource, version: str) -> str:
        """The schema of a kind (and of its list), under the kind's name; returns that name."""
        pkg = package(res.group, version, res.builtin)
        name = f"{pkg}.{res.kind}"
        model = model_for(res)
        description = _KIND_DOCS.get(res.kind) if res.builtin else None
        if model is not None:
            description = _doc(model) or description
        if description is None:
            description = (f"{res.kind} is a custom resource of {res.group}, defined by a "
                           f"CustomResourceDefinition." if not res.builtin else f"{res.kind} ({res.group_version}).")
        if not res.acted:
            description += f" {STORED_NOTE}" + (f" ({res.note})." if res.note else ".")
        elif res.note:
            description += f" In this lab: {res.note}."
        meta = _described(_ref(OBJECT_META), METADATA_DOC)
        if model is None:
            schema = _object(description, {**_typemeta(), "metadata": meta}, gvk=_gvk(res.group, version, res.kind))
            schema["x-kubernetes-preserve-unknown-fields"] = True
        else:
            props = self._properties(model, res.group, version)
            props.update(_typemeta())
            if "metadata" in props:
                props["metadata"] = meta
            # the top-level fields are optional in Kubernetes' schemas (the server checks what it needs)
            required = [f.alias or n for n, f in model.model_fields.items()
                        if f.is_required() and (f.alias or n) not in ("apiVersion", "kind", "metadata", "spec",
                                                                      "status")]
            schema = _object(description, props, required, gvk=_gvk(res.group, version, res.kind))
        self.schemas[name] = schema
        self.owners[name] = model or res
        self.schemas[f"{name}List"] = _object(f"{res.kind}List is a list of {res.kind} objects.", {
            **_typemeta(),
            "items": {"description": f"The {res.kind} objects.", "type": "array", "items": _ref(name)},
            "metadata": _described(_ref(LIST_META), LIST_METADATA_DOC),
        }, required=("items",), gvk=_gvk(res.group, version, f"{res.kind}List"))
        return name

    # ---- paths
    def paths(self, res: Resource, version: str) -> dict[str, dict]:
        g, v, kind = res.group, version, res.kind
        name = self.kind(res, version)
        gvk = _gvk(g, v, kind)
        tag = _tag(g, v)
        ids = f"{_camel(g)}{v[:1].upper()}{v[1:]}"
        ns = "Namespaced" if res.namespaced else ""
        prefix = "/" + gv_path(g, v)
        scope = "/namespaces/{namespace}" if res.namespaced else ""
        verbs = set(res.verbs)
        path_ns = ([_param("namespace", "path", "string", "The namespace of the objects.", True)]
                   if res.namespaced else [])
        pretty = _query("pretty")

        def op(action, op_id, description, params=(), body=None, responses=None, op_gvk=gvk):
            out = {"description": description, "operationId": op_id, "tags": [tag],
                   "x-kubernetes-action": action, "responses": responses}
            if params:
                out["parameters"] = list(params)
            if body is not None:
                out["requestBody"] = {"content": body, "required": True}
            if op_gvk is not None:
                out[GVK] = dict(op_gvk)
            return out

        out: dict[str, dict] = {}
        collection: dict = {}
        if "list" in verbs:
            collection["get"] = op("list", f"list{ids}{ns}{kind}", f"list or watch objects of kind {kind}",
                                   _query(*_LIST), responses=_responses(f"{name}List", types_=WATCH_TYPES))
        if "create" in verbs:
            collection["post"] = op("post", f"create{ids}{ns}{kind}", f"create a {kind}", _query(*_WRITE),
                                    _content(name, BODY_TYPES), _responses(name, ("200", "201", "202")))
        if "deletecollection" in verbs:
            collection["delete"] = op("deletecollection", f"deleteCollection{ids}{ns}{kind}",
                                      f"delete a collection of {kind}", _query(*_DELETE_COLLECTION),
                                      _content(DELETE_OPTIONS, BODY_TYPES), _responses(STATUS))
        if collection:
            out[f"{prefix}{scope}/{res.plural}"] = {**collection, "parameters": [*path_ns, *pretty]}
        if res.namespaced and "list" in verbs:
            out[f"{prefix}/{res.plural}"] = {
                "get": op("list", f"list{ids}{kind}ForAllNamespaces", f"list or watch objects of kind {kind}",
                          responses=_responses(f"{name}List", types_=WATCH_TYPES)),
                "parameters": [*_query(*_LIST), *pretty]}

        path_name = [_param("name", "path", "string", f"name of the {kind}", True)]
        item: dict = {}
        if "get" in verbs:
            item["get"] = op("get", f"read{ids}{ns}{kind}", f"read the specified {kind}", responses=_responses(name))
        if "update" in verbs:
            item["put"] = op("put", f"replace{ids}{ns}{kind}", f"replace the specified {kind}", _query(*_WRITE),
                             _content(name, BODY_TYPES), _responses(name, ("200", "201")))
        if "patch" in verbs:
            item["patch"] = op("patch", f"patch{ids}{ns}{kind}", f"partially update the specified {kind}",
                               _query(*_PATCH_Q), _content(PATCH, PATCH_TYPES), _responses(name, ("200", "201")))
        if "delete" in verbs:
            item["delete"] = op("delete", f"delete{ids}{ns}{kind}", f"delete a {kind}", _query(*_DELETE),
                                _content(DELETE_OPTIONS, BODY_TYPES), _responses(STATUS, ("200", "202")))
        if item:
            out[f"{prefix}{scope}/{res.plural}/{{name}}"] = {**item, "parameters": [*path_name, *path_ns, *pretty]}

        if "watch" in verbs:
            watch_list = _query(*_LIST, "pretty")
            watch_list_doc = (f"watch individual changes to a list of {kind}. deprecated: use the 'watch' "
                              f"parameter with a list operation instead.")
            out[f"{prefix}/watch{scope}/{res.plural}"] = {
                "get": op("watchlist", f"watch{ids}{ns}{kind}List", watch_list_doc,
                          responses=_responses(WATCH_EVENT, types_=WATCH_TYPES)),
                "parameters": [*path_ns, *watch_list]}
            if res.namespaced:
                out[f"{prefix}/watch/{res.plural}"] = {
                    "get": op("watchlist", f"watch{ids}{kind}ListForAllNamespaces", watch_list_doc,
                              responses=_responses(WATCH_EVENT, types_=WATCH_TYPES)),
                    "parameters": watch_list}
            out[f"{prefix}/watch{scope}/{res.plural}/{{name}}"] = {
                "get": op("watch", f"watch{ids}{ns}{kind}",
                          f"watch changes to an object of kind {kind}. deprecated: use the 'watch' parameter "
                          f"with a list operation instead, filtered to a single item with the 'fieldSelector' "
                          f"parameter.", responses=_responses(WATCH_EVENT, types_=WATCH_TYPES)),
                "parameters": [*path_name, *path_ns, *watch_list]}

        for sub in res.subresources:
            entry = self._subresource(res, version, sub, name, op, ids, ns, verbs)
            if entry:
                out[f"{prefix}{scope}/{res.plural}/{{name}}/{sub}"] = {
                    **entry, "parameters": [*path_name, *path_ns, *pretty]}
        return out

    def _subresource(self, res: Resource, version: str, sub: str, name: str, op, ids: str, ns: str,
                     verbs: set) -> dict:
        kind = res.kind
        camel = {"ephemeralcontainers": "EphemeralContainers"}.get(sub, sub[:1].upper() + sub[1:])
        base = f"{ids}{ns}{kind}{camel}"
        connect = {"exec": ("PodExecOptions", _EXEC), "attach": ("PodAttachOptions", _ATTACH),
                   "portforward": ("PodPortForwardOptions", ("ports",))}
        if sub in connect:
            options, params = connect[sub]
            gvk = _gvk("", "v1", options)
            string = _responses({"type": "string"}, types_=("*/*",))
            return {m.lower(): op("connect", f"connect{ids}{m}{ns}{kind}{camel}",
                                  f"connect {m} requests to {sub} of {kind}", _query(*params),
                                  responses=string, op_gvk=gvk) for m in ("Get", "Post")}
        if sub == "log":
            return {"get": op("get", f"read{base}", f"read log of the specified {kind}", _query(*_LOG),
                              responses=_responses({"type": "string"}, types_=("text/plain", "application/json")))}
        if sub in ("eviction", "binding"):
            if "create" not in verbs:
                return {}
            target, gvk = (EVICTION, _gvk("policy", "v1", "Eviction")) if sub == "eviction" else \
                (BINDING, _gvk("", "v1", "Binding"))
            return {"post": op("post", f"create{base}", f"create {sub} of a {kind}", _query(*_WRITE),
                               _content(target, BODY_TYPES), _responses(target, ("200", "201", "202")), gvk)}
        target, gvk = name, _gvk(res.group, version, kind)
        if sub == "scale":
            target, gvk = SCALE, _gvk("autoscaling", "v1", "Scale")
        entry = {}
        what = "scale" if sub == "scale" else sub
        if "get" in verbs:
            entry["get"] = op("get", f"read{base}", f"read {what} of the specified {kind}",
                              responses=_responses(target), op_gvk=gvk)
        if "update" in verbs:
            entry["put"] = op("put", f"replace{base}", f"replace {what} of the specified {kind}", _query(*_WRITE),
                              _content(target, BODY_TYPES), _responses(target, ("200", "201")), gvk)
        if "patch" in verbs:
            entry["patch"] = op("patch", f"patch{base}", f"partially update {what} of the specified {kind}",
                                _query(*_PATCH_Q), _content(PATCH, PATCH_TYPES), _responses(target, ("200", "201")),
                                gvk)
        return entry

    def closure(self, roots) -> dict[str, dict]:
        """The schemas the roots refer to, directly or through other schemas, sorted by name."""
        seen: set[str] = set()
        todo = list(_refs(roots))
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            todo.extend(_refs(self.schemas[name]))
        return {n: self.schemas[n] for n in sorted(seen)}


def _refs(obj) -> Iterable[str]:
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            r = o.get("$ref")
            if isinstance(r, str) and r.startswith(REF):
                yield r[len(REF):]
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)


# --------------------------------------------------------------------------- documents
def _group_versions(resources: Iterable[Resource]) -> list[tuple[str, str]]:
    out: dict[tuple[str, str], None] = {}
    for res in resources:
        for v in res.versions:
            out[(res.group, v)] = None
    return sorted(out, key=lambda gv: (gv[0], registry._version_priority(gv[1])))


def _build_v3(group: str, version: str, resources: tuple[Resource, ...]) -> dict:
    b = _Build()
    prefix = "/" + gv_path(group, version)
    paths: dict[str, dict] = {f"{prefix}/": {"get": {
        "description": "get available resources", "operationId": f"get{_camel(group)}{version[:1].upper()}"
                                                                 f"{version[1:]}APIResources",
        "tags": [_tag(group, version)], "responses": _responses(API_RESOURCE_LIST)}}}
    kinds = []
    for res in resources:
        paths.update(b.paths(res, version))
        kinds.append(f"{package(res.group, version, res.builtin)}.{res.kind}")
    roots = [paths, [_ref(k) for k in kinds], [_ref(k + "List") for k in kinds]]
    return {"openapi": "3.0.0", "info": dict(INFO), "paths": dict(sorted(paths.items())),
            "components": {"schemas": b.closure(roots), "securitySchemes": json.loads(json.dumps(SECURITY_SCHEME))}}


def _serialize(doc: dict) -> tuple[bytes, str]:
    data = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return data, hashlib.sha512(data).hexdigest().upper()


_lock = threading.RLock()
_cache: dict[tuple, tuple[dict, bytes, str]] = {}
_CACHE_MAX = 256


def _cached(key: tuple, build) -> tuple[dict, bytes, str]:
    hit = _cache.get(key)
    if hit is not None:
        return hit
    with _lock:
        hit = _cache.get(key)
        if hit is None:
            doc = build()
            hit = (doc, *_serialize(doc))
            if len(_cache) >= _CACHE_MAX:
                _cache.clear()
            _cache[key] = hit
        return hit


def _v3(group: str, version: str, resources: Iterable[Resource]) -> Optional[tuple[dict, bytes, str]]:
    mine = tuple(r for r in resources if r.group == group and version in r.versions)
    if not mine:
        return None
    return _cached(("v3", group, version, mine, _models_key()), lambda: _build_v3(group, version, mine))


def v3_index(resources: Iterable[Resource]) -> dict:
    """GET /openapi/v3: every group/version the resources are served at, with the URL of its document
    (``?hash=`` the SHA-512 of the document, in upper-case hex as the API server writes it)."""
    resources = tuple(resources)
    paths = {}
    for group, version in _group_versions(resources):
        _, _, digest = _v3(group, version, resources)
        key = gv_path(group, version)
        paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
    return {"paths": paths}


def v3_document(group: str, version: str, resources: Iterable[Resource]) -> Optional[dict]:
    """GET /openapi/v3/apis/<group>/<version> (/openapi/v3/api/v1 for the core group): an OpenAPI 3.0
    document of the resources served at that group/version; None when there are none (404)."""
    hit = _v3(group, version, resources)
    return hit[0] if hit else None


def v3_document_json(group: str, version: str, resources: Iterable[Resource]) -> Optional[tuple[bytes, str]]:
    """The document of :func:`v3_document` serialized, and its hash (the one in the index's URL)."""
    hit = _v3(group, version, resources)
    return (hit[1], hit[2]) if hit else None


def v2_document(resources: Iterable[Resource]) -> dict:
    """GET /openapi/v2: every group/version in one swagger 2.0 document."""
    return _v2(resources)[0]


def v2_document_json(resources: Iterable[Resource]) -> tuple[bytes, str]:
    """The document of :func:`v2_document` serialized, and its hash (for an ETag)."""
    _, data, digest = _v2(resources)
    return data, digest


def _v2(resources: Iterable[Resource]) -> tuple[dict, bytes, str]:
    resources = tuple(resources)
    return _cached(("v2", resources, _models_key()), lambda: _build_v2(resources))


def _build_v2(resources: tuple[Resource, ...]) -> dict:
    paths: dict[str, dict] = {}
    definitions: dict[str, dict] = {}
    for group, version in _group_versions(resources):
        doc = _v3(group, version, resources)[0]
        for path, item in doc["paths"].items():
            paths[path] = _path_v2(item)
        for name, schema in doc["components"]["schemas"].items():
            if name not in definitions:
                definitions[name] = _V2_OVERRIDES.get(name) or _schema_v2(schema)
    return {"swagger": "2.0", "info": dict(INFO), "paths": dict(sorted(paths.items())),
            "definitions": dict(sorted(definitions.items())),
            "securityDefinitions": json.loads(json.dumps(SECURITY_SCHEME)), "security": [{"BearerToken": []}]}


def _schema_v2(schema):
    """A v3 schema in swagger 2.0 form: #/definitions/ refs, a single-element allOf as $ref with siblings.
    An object that keeps unknown fields loses its properties, as the API server publishes custom resources
    in v2: kubectl's client-side validation (v2 only) would reject every field not listed."""
    if isinstance(schema, list):
        return [_schema_v2(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for k, v in schema.items():
        if k in ("properties", "required") and schema.get("x-kubernetes-preserve-unknown-fields") is True:
            continue
        if k == "$ref":
            out[k] = REF_V2 + v[len(REF):] if v.startswith(REF) else v
        elif k == "allOf" and len(v) == 1 and "$ref" in v[0]:
            out.update(_schema_v2(v[0]))
        elif k == "properties":
            out[k] = {p: _schema_v2(s) for p, s in v.items()}
        elif k in ("items", "additionalProperties", "allOf", "oneOf", "anyOf", "not"):
            out[k] = _schema_v2(v)
        else:
            out[k] = v
    return out


def _param_v2(p: dict) -> dict:
    out = {k: v for k, v in p.items() if k != "schema"}
    out.update(p.get("schema") or {})
    return out


def _path_v2(item: dict) -> dict:
    out = {}
    for method, op in item.items():
        if method == "parameters":
            out[method] = [_param_v2(p) for p in op]
            continue
        o = {k: op[k] for k in ("description", "operationId", "tags") if k in op}
        params = [_param_v2(p) for p in op.get("parameters", ())]
        body = op.get("requestBody")
        if body:
            content = body["content"]
            params.insert(0, {"name": "body", "in": "body", "required": True,
                              "schema": _schema_v2(next(iter(content.values()))["schema"])})
            o["consumes"] = list(content)
        else:
            o["consumes"] = ["*/*"]
        produces: list[str] = []
        responses = {}
        for code, r in op["responses"].items():
            rr = {"description": r["description"]}
            if r.get("content"):
                for t in r["content"]:
                    if t not in produces:
                        produces.append(t)
                rr["schema"] = _schema_v2(next(iter(r["content"].values()))["schema"])
            responses[code] = rr
        o["produces"] = produces
        o["schemes"] = ["https"]
        if params:
            o["parameters"] = params
        o["responses"] = responses
        for k in ("x-kubernetes-action", GVK):
            if k in op:
                o[k] = op[k]
        out[method] = o
    return out


__all__ = ["v3_index", "v3_document", "v3_document_json", "v2_document", "v2_document_json", "gv_path",
           "package", "model_for"]
