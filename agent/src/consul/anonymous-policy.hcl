# What anyone on the home LAN may do without a token: see every node and service (the Consul UI at :8500, the
# catalog, DNS). Nothing else: no KV, keyring, operator, agent, ACL or snapshot access.
node_prefix "" {
  policy = "read"
}
service_prefix "" {
  policy = "read"
}
