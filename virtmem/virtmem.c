/* virtmem.c — placeholder while the skeleton lands */
