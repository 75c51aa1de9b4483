# virtmem/ — libvirtmem
