#!/bin/bash
# Slow suite: test-vdboot-tcg.sh over every format vdconvert writes (raw,
# qcow2, vmdk sparse and streamOptimized, vdi, vhd, vhdx, parallels, qed).
VDBOOT_TCG_FORMATS=all exec bash "$(dirname "$0")/test-vdboot-tcg.sh"
