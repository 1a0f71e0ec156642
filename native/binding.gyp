{
  "targets": [
    {
      "target_name": "original_dst",
      "sources": ["original_dst.c"]
    },
    {
      "target_name": "socket_mark",
      "sources": ["socket_mark.c"]
    },
    {
      "target_name": "kernel_relay",
      "sources": ["kernel_relay.c"]
    },
    {
      "target_name": "udp_batch",
      "sources": ["udp_batch.c"]
    },
    {
      "target_name": "nflog",
      "sources": ["nflog.c"]
    }
  ]
}
