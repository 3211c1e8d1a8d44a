"""Files in and out safely: the one atomic writer (:mod:`.atomic`), owned output folders (:mod:`.owned`) and
the one reader of small YAML/JSON documents a user or a stranger wrote (:mod:`.documents`)."""
