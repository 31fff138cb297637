"""Labels and annotations Kubernetes itself defines, named once for every layer (the pure controllers,
the data plane, the API and the programs in pods all read them)."""

SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # an EndpointSlice's Service
