"""CPU shortcuts in moto's request paths that change no answer it gives.

On this 2-core machine the emulator is one process serving every worker: in B2-multi it used
~95 % of a core, most of it in moto's DynamoDB update expressions (an update of a ledger item
cost 6 ms, 11 ms for a new item) and in SQS receives that rebuild every queue attribute per
message. What the benchmarks then measure is the emulator, not the worker. The shortcuts:

- **An update expression is parsed once** per expression text. moto parses it on every
  ``UpdateItem``; the tree is never changed afterwards (each validation works on its own copy).
- **The copy a validation works on is made by pickling** the tree instead of ``deepcopy``: the
  same object graph (parents included), several times faster.
- **A traversal of the tree asks once** which node types it processes, instead of rebuilding
  that tuple at every node (moto's traversal otherwise unchanged: same order, same hooks).
- **Checks of the expression alone run once** per expression, attribute names and key schema:
  at most one action per clause, no overlapping paths, no key attribute updated. They do not
  look at the item or the values, so a text that passed them once passes them again; one that
  fails is never remembered, so it fails every time, with moto's own message.
- **A Query of the table (not of an index) looks at its own partition**: moto lists and sorts
  every item of the table and keeps those with the hash key asked for, O(table) per Query where
  DynamoDB's is O(partition); as a ledger table fills over a run, every Query costs more. The
  partition's items are exactly the ones kept; moto's sort, conditions and paging run as before.
- **A received message's retention** is read from the queue's ``message_retention_period``
  instead of through ``get_queue_attributes``, which counts every message of the queue three
  times for each attribute asked, once per message received.

``install()`` is idempotent; it patches moto process-wide, as the server's other patches do.
"""

from __future__ import annotations

import functools
import pickle
import threading
from typing import Any, Final

__all__ = ["install"]

_INSTALL_LOCK: Final = threading.Lock()
_PARSED_EXPRESSIONS: Final = 1024
# (expression text, attribute names, key attributes) whose expression-only checks passed.
_CHECKED: Final[set[tuple[str, tuple[tuple[str, str], ...], tuple[str, ...]]]] = set()
_CHECKED_LIMIT: Final = 4096


def install() -> None:
    with _INSTALL_LOCK:
        from moto.dynamodb.parsing import validators  # noqa: PLC0415 - loads moto

        if getattr(validators.UpdateExpressionValidator, "fanout_costs", False):
            return
        _parse_once()
        _traverse_cheaply()
        _validate_cheaply()
        _query_the_partition()
        _retention_directly()
        validators.UpdateExpressionValidator.fanout_costs = True  # type: ignore[attr-defined]


def _parse_once() -> None:
    from moto.dynamodb.parsing.expressions import (  # type: ignore[attr-defined]  # noqa: PLC0415
        UpdateExpressionParser,
    )

    parse = UpdateExpressionParser.make.__func__

    @functools.lru_cache(maxsize=_PARSED_EXPRESSIONS)
    def parsed(cls: type, expression: str) -> Any:
        tree = parse(cls, expression)
        tree.fanout_text = expression  # what _CHECKED remembers it by
        return tree

    def make(cls: type, expression: str) -> Any:
        return parsed(cls, expression)

    UpdateExpressionParser.make = classmethod(make)


def _traverse_cheaply() -> None:
    from moto.dynamodb.parsing.ast_nodes import (  # type: ignore[attr-defined]  # noqa: PLC0415
        DepthFirstTraverser,
        Node,
    )

    def walk(traverser: Any, node: Any, child_id: int, types: tuple[type, ...]) -> Any:
        # moto's traverse_node_recursively, with the processed types looked up once.
        if isinstance(node, Node):
            parent = node.parent
            if node.children is not None:
                for i, child in enumerate(node.children):
                    traverser.pre_processing_of_child(node, i)
                    walk(traverser, child, i, types)
            if isinstance(node, types):
                node = traverser.process(node)
                node.parent = parent
                if parent:
                    parent.children[child_id] = node
        return node

    def traverse(self: Any, node: Any) -> Any:
        return walk(self, node, -1, self.nodes_to_be_processed())

    DepthFirstTraverser.traverse = traverse


def _validate_cheaply() -> None:
    from moto.dynamodb.parsing import validators  # noqa: PLC0415

    structural = (
        validators.ActionCountValidator,
        validators.OverlappingPathsValidator,
        validators.UpdateHashRangeKeyValidator,
    )
    cls = validators.UpdateExpressionValidator

    def __init__(  # noqa: N807, PLR0917 - moto's Validator.__init__, positional as moto calls it
        self: Any,
        expression: Any,
        expression_attribute_names: Any,
        expression_attribute_values: Any,
        item: Any,
        table: Any,
    ) -> None:
        self.expression_attribute_names = expression_attribute_names
        self.expression_attribute_values = expression_attribute_values
        self.item = item
        self.table = table
        self.processors = self.get_ast_processors()
        self.node_to_validate = pickle.loads(pickle.dumps(expression, pickle.HIGHEST_PROTOCOL))  # noqa: S301 - our own object
        text = getattr(expression, "fanout_text", None)
        names = tuple(sorted((expression_attribute_names or {}).items()))
        self.fanout_checked = None if text is None else (text, names, tuple(table.table_key_attrs))

    def validate(self: Any) -> Any:
        known = self.fanout_checked is not None and self.fanout_checked in _CHECKED
        node = self.node_to_validate
        for processor in self.processors:
            if known and isinstance(processor, structural):
                continue
            node = processor.traverse(node)
        if self.fanout_checked is not None and len(_CHECKED) < _CHECKED_LIMIT:
            _CHECKED.add(self.fanout_checked)
        return node

    cls.__init__ = __init__  # type: ignore[method-assign]
    cls.validate = validate  # type: ignore[method-assign]


_QUERYING: Final = threading.local()  # the table and hash key of the Query in progress


def _query_the_partition() -> None:
    from moto.dynamodb.models.table import Table  # noqa: PLC0415

    query, all_items = Table.query, Table.all_items

    @functools.wraps(query)
    def partition_query(self: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("index_name") or hash_key is None:
            return query(self, hash_key, *args, **kwargs)
        _QUERYING.partition = (self, hash_key)
        try:
            return query(self, hash_key, *args, **kwargs)
        finally:
            _QUERYING.partition = None

    @functools.wraps(all_items)
    def items_of(self: Table) -> Any:
        table, hash_key = getattr(_QUERYING, "partition", None) or (None, None)
        if table is not self:
            return all_items(self)
        found = self.items.get(hash_key)
        if found is None:
            return []
        # moto's all_items, for one hash key: an item per range key, or the item itself.
        partition = list(found.values()) if self.range_key_attr else [found]
        return sorted(partition, key=lambda x: x.range_key if x.range_key else x.hash_key)

    Table.query = partition_query  # type: ignore[method-assign]
    Table.all_items = items_of  # type: ignore[method-assign]


def _retention_directly() -> None:
    from moto.core.utils import unix_time  # noqa: PLC0415
    from moto.sqs.models import SQSBackend  # noqa: PLC0415

    def is_message_valid_based_on_retention_period(
        self: SQSBackend, queue_name: str, message: Any
    ) -> bool:
        # set from the MessageRetentionPeriod attribute by moto's Queue._set_attributes
        retention = int(self.get_queue(queue_name).message_retention_period)  # type: ignore[attr-defined]
        return bool(retention + message.sent_timestamp / 1000 > unix_time())

    SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        is_message_valid_based_on_retention_period
    )
