"""A document's items in the order Yjs gives them (YATA), rebuilt from its state.

Blame reads which item each visible character belongs to; the history listing finds
which map entry an update's entry replaced. Pure code over :mod:`crdt.ydecode`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator

from crdt.ydecode import ID, Item, UpdateDecodeError, decode_update, split_units


class ItemOrder:
    """A document's items in the order Yjs gives them (YATA), with their ids.

    Built from a whole-document update (``Doc.get_update()``): structs are integrated
    dependencies first, exactly as ``Item.integrate`` in Yjs does, then the delete set is
    applied. Used to read which item each visible character belongs to.
    """

    def __init__(self) -> None:
        self._items: dict[int, list[Item]] = {}
        self._clocks: dict[int, list[int]] = {}
        self._starts: dict[str | ID, Item | None] = {}

    def find(self, id_: ID) -> Item | None:
        """The item holding ``id_`` (None when the document has no such struct)."""
        clocks = self._clocks.get(id_[0])
        if clocks:
            i = bisect_right(clocks, id_[1]) - 1
            if i >= 0:
                item = self._items[id_[0]][i]
                if id_[1] < item.clock + item.length:
                    return item
        return None

    def _index(self, id_: ID) -> tuple[list[Item], int]:
        client, clock = id_
        clocks = self._clocks.get(client)
        if clocks:
            i = bisect_right(clocks, clock) - 1
            if i >= 0:
                items = self._items[client]
                item = items[i]
                if clock < item.clock + item.length:
                    return items, i
        raise UpdateDecodeError(f"the update refers to a missing struct {id_}")

    def _split(self, items: list[Item], i: int, diff: int) -> Item:
        """Split ``items[i]`` after ``diff`` units; the right part (as Yjs splitItem)."""
        item = items[i]
        right = Item(item.client, item.clock + diff, item.length - diff)
        right.origin = (item.client, item.clock + diff - 1)
        right.right_origin, right.parent, right.sub = item.right_origin, item.parent, item.sub
        right.deleted, right.gc = item.deleted, item.gc
        if item.text is not None:
            item.text, right.text = split_units(item.text, diff)
        item.length = diff
        right.left, right.right = item, item.right
        if item.right is not None:
            item.right.left = right
        item.right = right
        items.insert(i + 1, right)
        self._clocks[item.client].insert(i + 1, right.clock)
        return right

    def _clean_end(self, id_: ID) -> Item:
        items, i = self._index(id_)
        item = items[i]
        if id_[1] != item.clock + item.length - 1:
            self._split(items, i, id_[1] - item.clock + 1)
        return item

    def _clean_start(self, id_: ID) -> Item:
        items, i = self._index(id_)
        item = items[i]
        if id_[1] != item.clock:
            return self._split(items, i, id_[1] - item.clock)
        return item

    def apply_state(self, update: bytes) -> None:
        """Integrate a whole-document update (no struct may be missing)."""
        structs, deletes = decode_update(update)
        queues = {client: items for client, items in structs.items() if items}
        heads = dict.fromkeys(queues, 0)
        upto = {client: items[0].clock for client, items in queues.items()}
        integrate = self._integrate
        for first in sorted(queues, reverse=True):
            stack = [first]
            while stack:
                client = stack[-1]
                items, head, needed = queues[client], heads[client], None
                while head < len(items):
                    item = items[head]
                    needed = _needs(item, upto)
                    if needed is not None:
                        break
                    head += 1
                    integrate(item)
                    upto[client] = item.clock + item.length
                    if len(stack) > 1:
                        break  # back to the client that waited for this struct
                heads[client] = head
                if needed is None:
                    stack.pop()
                elif heads.get(needed, 0) >= len(queues.get(needed, ())) or needed in stack:
                    raise UpdateDecodeError(
                        f"struct ({items[head].client}, {items[head].clock}) depends on a "
                        "missing one"
                    )
                else:
                    stack.append(needed)
        for client, clock, length in deletes:
            self._delete(client, clock, clock + length)

    def _integrate(self, item: Item) -> None:
        left = self._clean_end(item.origin) if item.origin is not None else None
        right = self._clean_start(item.right_origin) if item.right_origin is not None else None
        if item.parent is None:
            ref = left if left is not None else right
            if ref is None:
                raise UpdateDecodeError(f"struct ({item.client}, {item.clock}) has no parent")
            item.parent, item.sub = ref.parent, ref.sub
            if ref.gc:
                item.gc = item.deleted = True
        items = self._items.setdefault(item.client, [])
        if items and item.clock < items[-1].clock + items[-1].length:
            raise UpdateDecodeError(f"struct ({item.client}, {item.clock}) overlaps another")
        items.append(item)
        self._clocks.setdefault(item.client, []).append(item.clock)
        if item.gc or item.sub is not None:
            return  # collected, or a map entry: no sequence order to keep
        parent = item.parent
        assert parent is not None
        if (left is None and (right is None or right.left is not None)) or (
            left is not None and left.right is not right
        ):
            left = self._resolve(item, left, right, parent)
        item.left = left
        if left is not None:
            item.right = left.right
            left.right = item
        else:
            item.right = self._starts.get(parent)
            self._starts[parent] = item
        if item.right is not None:
            item.right.left = item

    def _resolve(
        self, item: Item, left: Item | None, right: Item | None, parent: str | ID
    ) -> Item | None:
        """Yjs's conflict resolution: where ``item`` goes among the items inserted
        concurrently between its origins (lower client ids first, origins respected)."""
        o = left.right if left is not None else self._starts.get(parent)
        conflicting: set[Item] = set()
        before_origin: set[Item] = set()
        while o is not None and o is not right:
            before_origin.add(o)
            conflicting.add(o)
            if item.origin == o.origin:
                if o.client < item.client:
                    left = o
                    conflicting.clear()
                elif item.right_origin == o.right_origin:
                    break
            elif o.origin is not None and (origin := self.find(o.origin)) in before_origin:
                if origin not in conflicting:
                    left = o
                    conflicting.clear()
            else:
                break
            o = o.right
        return left

    def _delete(self, client: int, start: int, end: int) -> None:
        pos = start
        while pos < end:
            if self.find((client, pos)) is None:
                return  # deletions of structs this document never received
            items, i = self._index((client, pos))
            if items[i].clock < pos:
                self._split(items, i, pos - items[i].clock)
                i += 1
            item = items[i]
            if item.clock + item.length > end:
                self._split(items, i, end - item.clock)
            item.deleted = True
            pos = item.clock + item.length

    def entries(self, root: str, key: str) -> Iterator[Item]:
        """The items of root map ``root`` under ``key`` that are not deleted: the key's
        current value (one item, as Yjs deletes every entry an entry replaced)."""
        for items in self._items.values():
            for item in items:
                if item.parent == root and item.sub == key and not item.deleted:
                    yield item

    def sequence(self, root: str) -> Iterator[Item]:
        """The items of root type ``root`` in document order, deleted ones too."""
        item = self._starts.get(root)
        while item is not None:
            yield item
            item = item.right

    def text_runs(self, root: str) -> Iterator[tuple[int, int, str]]:
        """``(client, clock, text)`` of the visible strings of the root type ``root``."""
        item = self._starts.get(root)
        while item is not None:
            if not item.deleted and item.text is not None:
                yield item.client, item.clock, item.text
            item = item.right


def _needs(item: Item, upto: dict[int, int]) -> int | None:
    """The client whose structs must be integrated before ``item`` (None: none)."""
    for ref in (item.origin, item.right_origin, item.parent):
        if isinstance(ref, tuple):
            client, clock = ref
            if client == item.client:
                if clock >= item.clock:
                    raise UpdateDecodeError(f"struct ({item.client}, {item.clock}) refers ahead")
            elif clock >= upto.get(client, 0):
                return client
    return None
