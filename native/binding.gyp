{
  "targets": [
    {
      "target_name": "original_dst",
      "sources": ["original_dst.c"]
    },
    {
      "target_name": "socket_mark",
      "sources": ["socket_mark.c"]
    }
  ]
}
