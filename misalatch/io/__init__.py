"""Files in and out safely: the one atomic writer (``.atomic``), owned output folders (``.owned``) and
the one reader of small YAML/JSON documents a user or a stranger wrote (``.documents``)."""
