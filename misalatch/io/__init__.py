"""Writing files safely: the one atomic writer (:mod:`.atomic`) and owned output folders (:mod:`.owned`)."""
