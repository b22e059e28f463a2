"""Reading Loki: the query client (:mod:`shipper.loki.client`), LogQL building and quoting
(:mod:`shipper.loki.logql`) and paged reads of events (:mod:`shipper.loki.reader`).

Pushing is the delivery engine's (:mod:`shipper.delivery.push`); this package builds on its
connection and adds everything an admin or a script reads.
"""
