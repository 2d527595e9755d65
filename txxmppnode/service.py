"""Client services: pieces of client functionality summoned on demand, one instance per class.

A service is a subclass of :class:`Service`.  It declares how it relates to other services with
two class attributes:

``ORDER_AFTER``
    The services this one depends on.  Summoning a service summons these first (recursively),
    so they are always instantiated before it, and hands their instances to its constructor
    (:attr:`Service.dependencies`).
``ORDER_BEFORE``
    Services that, *if* they are instantiated at all, must come after this one.  This is only
    an ordering constraint: it never causes anything to be summoned.

Both may be written as any collection of :class:`Service` subclasses;
:meth:`Service.__init_subclass__` checks them and turns them into frozensets.  A set literal
(``ORDER_AFTER = {Roster}``) type-checks; ``frozenset({Roster})`` also keeps linters that flag
mutable class attributes quiet.

Together they define a "comes before" relation: every member of ``X.ORDER_AFTER`` comes before
``X``, and ``X`` comes before every member of ``X.ORDER_BEFORE``.  The relation is transitive,
also through classes that are not instantiated, and must not have cycles.
:func:`summon_order` computes the instantiation order; a :class:`ServiceRegistry` keeps the
instances of one client and shuts them down in reverse order.

>>> class Roster(Service): ...
>>> class Avatars(Service):
...     ORDER_AFTER = frozenset({Roster})
>>> [service.__name__ for service in summon_order(Avatars)]
['Roster', 'Avatars']
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping
from collections.abc import Set as AbstractSet
from types import MappingProxyType
from typing import Any, ClassVar, Final, TypeVar, cast

from twisted.internet import defer
from twisted.logger import Logger, LogLevel

_log = Logger()

_S = TypeVar("_S", bound="Service")

_ORDERING_ATTRIBUTES: Final = ("ORDER_AFTER", "ORDER_BEFORE")


class Service:
    """Base class of client services.

    :param client: the client the service belongs to, kept as :attr:`client`.
    :param dependencies: the instances of the classes in :attr:`ORDER_AFTER`, by class; the
        summoner (:class:`ServiceRegistry`) passes them.  Subclasses that override
        ``__init__`` accept the keyword arguments and pass them on.
    :param logger: the logger to use; by default a :class:`~twisted.logger.Logger` whose
        namespace is the class's fully qualified name, with the service as its source.
    """

    #: The services this one depends on: summoned first and ordered before it.
    #: Declared as any collection of :class:`Service` subclasses; always a frozenset once the
    #: class exists.
    ORDER_AFTER: ClassVar[AbstractSet[type[Service]]] = frozenset()

    #: The services that must come after this one if they are instantiated; never summoned
    #: because of this declaration.  Declared and normalised like :attr:`ORDER_AFTER`.
    ORDER_BEFORE: ClassVar[AbstractSet[type[Service]]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Check the ordering attributes the subclass declares and make them frozensets.

        :raises TypeError: if a declaration is not a collection of :class:`Service` subclasses.
        """
        super().__init_subclass__(**kwargs)
        for attribute in _ORDERING_ATTRIBUTES:
            if attribute in cls.__dict__:
                setattr(cls, attribute, _ordering(cls, attribute))

    def __init__(
        self,
        client: Any,
        *,
        dependencies: Mapping[type[Service], Service] | None = None,
        logger: Logger | None = None,
    ) -> None:
        self.client = client
        self._dependencies: Mapping[type[Service], Service] = MappingProxyType(
            dict(dependencies or {})
        )
        if logger is None:
            logger = Logger(namespace=_name(type(self)), source=self)
        self.log = logger

    @property
    def dependencies(self) -> Mapping[type[Service], Service]:
        """The instances of the services this one was ordered after, by class (read-only)."""
        return self._dependencies

    def dependency(self, cls: type[_S]) -> _S:
        """Return the instance of *cls* this service was given as a dependency.

        Unlike indexing :attr:`dependencies`, the result has the type of *cls*.

        :raises KeyError: if the service was not given an instance of *cls*.
        """
        try:
            instance = self._dependencies[cls]
        except KeyError:
            raise KeyError(f"{_name(type(self))} has no dependency {_name(cls)}") from None
        return cast(_S, instance)

    def shutdown(self) -> defer.Deferred[None]:
        """Release what the service holds; called when its client is closed.

        The default does nothing and fires at once.  Overrides return a Deferred that fires
        when the service has finished; a failure is logged by the registry and otherwise
        ignored.
        """
        return defer.succeed(None)


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _ordering(cls: type[Service], attribute: str) -> frozenset[type[Service]]:
    """The value of *cls*'s ordering *attribute* as a frozenset, after checking it.

    It is read again on each use, so an attribute assigned after the class was created is
    checked too.
    """
    declared: object = getattr(cls, attribute)
    if isinstance(declared, (str, bytes)) or not isinstance(declared, Iterable):
        raise TypeError(
            f"{_name(cls)}.{attribute} must be a collection of Service subclasses, not {declared!r}"
        )
    members = frozenset(declared)
    for member in members:
        if not (isinstance(member, type) and issubclass(member, Service)):
            raise TypeError(f"{_name(cls)}.{attribute}: {member!r} is not a Service subclass")
    return members


def _sorted(classes: Iterable[type[Service]]) -> list[type[Service]]:
    return sorted(classes, key=_name)


def summon_order(
    cls: type[Service], present: Collection[type[Service]] = ()
) -> list[type[Service]]:
    """Return the classes to instantiate, in order, to have an instance of *cls*.

    The result holds *cls* and everything it depends on through ``ORDER_AFTER`` (transitively),
    except the classes in *present* (already instantiated) and what is reached only through
    them.  *cls* comes last (an empty list if it is present).  The order respects the "comes
    before" relation of the module documentation, followed through every class reachable from
    the ones to instantiate; among classes it leaves unordered, the one whose fully qualified
    name sorts first comes first, so the result is deterministic.

    A constraint putting a class to instantiate before a present one cannot be honoured and is
    ignored.

    :raises TypeError: if *cls* is not a :class:`Service` subclass, or an ordering attribute is
        malformed.
    :raises ValueError: if the relation has a cycle among the classes considered; the message
        names the classes in the cycle.
    """
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise TypeError(f"{cls!r} is not a Service subclass")
    already = set(present)
    if cls in already:
        return []

    after: dict[type[Service], list[type[Service]]] = {}
    before: dict[type[Service], list[type[Service]]] = {}

    def explore(start: type[Service], follow_before: bool) -> list[type[Service]]:
        """Visit classes from *start*; return them in the order first reached."""
        reached: list[type[Service]] = []
        stack = [start]
        seen = {start}
        while stack:
            node = stack.pop()
            reached.append(node)
            if node not in after:
                after[node] = _sorted(_ordering(node, "ORDER_AFTER"))
                before[node] = _sorted(_ordering(node, "ORDER_BEFORE"))
            if not follow_before and node in already:
                continue  # a present class: its dependencies are not ours to summon
            neighbours = after[node] + before[node] if follow_before else after[node]
            for neighbour in reversed(neighbours):
                if neighbour not in seen:
                    seen.add(neighbour)
                    stack.append(neighbour)
        return reached

    needed = [node for node in explore(cls, follow_before=False) if node not in already]
    # every class reachable from the needed ones, through both attributes
    nodes: dict[type[Service], None] = {}
    for node in needed:
        if node not in nodes:
            nodes.update(dict.fromkeys(explore(node, follow_before=True)))

    # the edges of the "comes before" relation, and how many unplaced predecessors each has
    successors: dict[type[Service], list[type[Service]]] = {node: [] for node in nodes}
    predecessors: dict[type[Service], list[type[Service]]] = {node: [] for node in nodes}
    for node in nodes:
        for earlier in after[node]:
            successors[earlier].append(node)
            predecessors[node].append(earlier)
        for later in before[node]:
            successors[node].append(later)
            predecessors[later].append(node)
    waiting = {node: len(predecessors[node]) for node in nodes}

    index = {node: i for i, node in enumerate(nodes)}  # breaks ties between equal names
    ready = [(_name(node), index[node], node) for node in nodes if waiting[node] == 0]
    heapq.heapify(ready)
    placed: list[type[Service]] = []
    while ready:
        _, _, node = heapq.heappop(ready)
        placed.append(node)
        for later in successors[node]:
            waiting[later] -= 1
            if waiting[later] == 0:
                heapq.heappush(ready, (_name(later), index[later], later))

    if len(placed) < len(nodes):
        raise ValueError(f"services ordered in a cycle: {_describe_cycle(waiting, predecessors)}")
    wanted = set(needed)
    return [node for node in placed if node in wanted]


def _describe_cycle(
    waiting: Mapping[type[Service], int],
    predecessors: Mapping[type[Service], list[type[Service]]],
) -> str:
    """Name one cycle among the classes a topological sort could not place.

    Each unplaced class has an unplaced predecessor, so walking back from one of them must
    come round to a class already visited.
    """
    unplaced = {node for node, count in waiting.items() if count > 0}
    walk = [_sorted(unplaced)[0]]
    position = {walk[0]: 0}
    while True:
        earlier = next(p for p in _sorted(predecessors[walk[-1]]) if p in unplaced)
        if earlier in position:
            cycle = walk[position[earlier] :]
            break
        position[earlier] = len(walk)
        walk.append(earlier)
    cycle.reverse()  # the walk went backwards; present it in "comes before" order
    return " before ".join(_name(node) for node in [*cycle, cycle[0]])


class ServiceRegistry:
    """The services of one client: at most one instance per class, in summon order.

    :param client: passed to each service's constructor; the registry does nothing else with
        it.
    :param logger: where failing shutdowns are logged (default: this module's logger).
    """

    def __init__(self, client: Any, *, logger: Logger | None = None) -> None:
        self.client = client
        self.log = _log if logger is None else logger
        self._instances: dict[type[Service], Service] = {}
        self._constructing: set[type[Service]] = set()

    def summon(self, cls: type[_S]) -> _S:
        """Return the instance of *cls*, creating it and its dependencies if needed.

        Classes are instantiated in :func:`summon_order`, each with ``client`` and its
        ``dependencies``.  A service's constructor may summon other services.  If a
        constructor raises, the services created before it stay registered and the exception
        propagates.

        :raises TypeError: if *cls* is not a :class:`Service` subclass.
        :raises ValueError: if the service ordering has a cycle.
        :raises RuntimeError: if a constructor summons a service still being constructed.
        """
        existing = self._instances.get(cls)
        if existing is not None:
            return cast(_S, existing)
        for service_class in summon_order(cls, present=self._instances.keys()):
            if service_class in self._instances:
                continue  # a constructor earlier in the loop summoned it
            if service_class in self._constructing:
                raise RuntimeError(
                    f"{_name(service_class)} was summoned while it was being constructed"
                )
            dependencies = {
                dependency: self._instances[dependency]
                for dependency in _ordering(service_class, "ORDER_AFTER")
            }
            self._constructing.add(service_class)
            try:
                instance = service_class(self.client, dependencies=dependencies)
            finally:
                self._constructing.discard(service_class)
            self._instances[service_class] = instance
        return cast(_S, self._instances[cls])

    def get(self, cls: type[_S]) -> _S | None:
        """Return the instance of *cls* if it has been summoned, else ``None``."""
        return cast("_S | None", self._instances.get(cls))

    def __getitem__(self, cls: type[_S]) -> _S:
        """Return the instance of *cls*.

        :raises KeyError: if *cls* has not been summoned.
        """
        try:
            return cast(_S, self._instances[cls])
        except KeyError:
            raise KeyError(f"{_name(cls)} has not been summoned") from None

    def __contains__(self, cls: object) -> bool:
        return cls in self._instances

    def __len__(self) -> int:
        return len(self._instances)

    def instances_in_order(self) -> list[Service]:
        """The service instances, in the order they were created."""
        return list(self._instances.values())

    def shutdown_all(self) -> defer.Deferred[None]:
        """Shut every service down, in reverse summon order, one after the other.

        The registry is emptied at once, so a service summoned later is a new instance.  A
        service's shutdown that raises or fails is logged and the others still run; the
        Deferred always fires with ``None`` once the last shutdown has finished.
        """
        services = list(reversed(self._instances.values()))
        self._instances.clear()
        return defer.Deferred.fromCoroutine(self._shutdown(services))

    async def _shutdown(self, services: list[Service]) -> None:
        for service in services:
            try:
                await defer.maybeDeferred(service.shutdown)
            except Exception:
                self.log.failure(
                    "shutting down service {service} failed",
                    level=LogLevel.error,
                    service=_name(type(service)),
                )


__all__ = ["Service", "ServiceRegistry", "summon_order"]
