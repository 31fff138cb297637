"""Labels, annotations and taints Kubernetes itself defines, named once for every layer (the pure
controllers, the data plane, the API, the CLI and the programs in pods all read them)."""

# EndpointSlices
SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # an EndpointSlice's Service
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"  # who maintains an EndpointSlice
ENDPOINTSLICE_CONTROLLER = "endpointslice-controller.k8s.io"  # ... the EndpointSlice controller (its value)

# nodes
NODE_ROLE_PREFIX = "node-role.kubernetes.io/"  # node-role.kubernetes.io/<role>: kubectl's ROLES column
CONTROL_PLANE_LABEL = NODE_ROLE_PREFIX + "control-plane"  # kubeadm's label on a control-plane node
CONTROL_PLANE_TAINT = CONTROL_PLANE_LABEL  # ... and the key of its NoSchedule taint
HOSTNAME_LABEL = "kubernetes.io/hostname"
OS_LABEL = "kubernetes.io/os"
ZONE_LABEL = "topology.kubernetes.io/zone"
EXCLUDE_FROM_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"

# workloads
POD_TEMPLATE_HASH_LABEL = "pod-template-hash"  # a ReplicaSet's pods (and its name's suffix)
DEPLOYMENT_REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
CONTROLLER_REVISION_HASH_LABEL = "controller-revision-hash"  # a DaemonSet's pods
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"  # a static pod's mirror in the API
