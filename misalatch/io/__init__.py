"""Writing files safely: the one atomic writer (``.atomic``) and owned output folders (``.owned``)."""
