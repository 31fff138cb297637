"""The Kubernetes API, as pure parts: the table of kinds, patches, selectors, watch windows, Tables,
discovery and OpenAPI documents, Status errors, PKI and kubeconfig. The server that puts them on the
wire is :mod:`netemu.daemon.apiserver`; nothing here touches the kernel or the network."""
