"""Reading Loki: the query client and the one reader of its ``/config``
(:mod:`shipper.loki.client`), LogQL building and quoting (:mod:`shipper.loki.logql`), stream
selectors parsed and evaluated as Loki does (:mod:`shipper.loki.selector`), paged reads of
events (:mod:`shipper.loki.reader`), the range of a read (:mod:`shipper.loki.timerange`) and
the public read API on top of them, ``shipper.LokiReader`` (:mod:`shipper.loki.read_api`).

Pushing is the delivery engine's (:mod:`shipper.delivery.push`); this package builds on its
connection and adds everything an admin or a script reads. Label text (``{a="1"}``) is read by
:mod:`shipper.delivery.labels`, which the engine shares.
"""
