# server-mock/ — blkmap-server (filled by the server issue)
