"""Tests of txxmppnode.service: ordering declarations, summon order and the registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pytest
from twisted.internet import defer
from twisted.logger import ILogObserver, LogEvent, Logger, LogLevel, capturedLogs, formatEvent

from txxmppnode.service import Service, ServiceRegistry, summon_order


def names(classes: Sequence[type[Service]]) -> list[str]:
    """The plain names of *classes*, in order."""
    return [cls.__name__ for cls in classes]


def cycle_in(error: pytest.ExceptionInfo[ValueError]) -> list[str]:
    """The plain class names of the cycle a ValueError reports, first name repeated last."""
    message = str(error.value)
    assert message.startswith("services ordered in a cycle: ")
    chain = message.removeprefix("services ordered in a cycle: ").split(" before ")
    return [name.rsplit(".", 1)[-1] for name in chain]


def assert_cycle(error: pytest.ExceptionInfo[ValueError], expected: Sequence[str]) -> None:
    """Check that the reported cycle is *expected* ("comes before" order), from any start."""
    reported = cycle_in(error)
    assert reported[0] == reported[-1]
    loop = reported[:-1]
    assert len(loop) == len(expected)
    start = loop.index(expected[0])
    assert loop[start:] + loop[:start] == list(expected)


# -- declarations ---------------------------------------------------------------------------


def test_base_class_declares_nothing() -> None:
    assert frozenset() == Service.ORDER_AFTER
    assert frozenset() == Service.ORDER_BEFORE


def test_declarations_are_normalised_to_frozensets() -> None:
    class A(Service):
        pass

    class B(Service):
        ORDER_AFTER = {A}  # noqa: RUF012  # the set form is accepted, and frozen

    class C(Service):
        ORDER_AFTER = [A, B, A]  # type: ignore[assignment]  # noqa: RUF012
        ORDER_BEFORE = (B,)  # type: ignore[assignment]

    assert isinstance(B.ORDER_AFTER, frozenset)
    assert frozenset({A}) == B.ORDER_AFTER
    assert type(C.ORDER_AFTER) is frozenset
    assert frozenset({A, B}) == C.ORDER_AFTER
    assert type(C.ORDER_BEFORE) is frozenset
    assert frozenset({B}) == C.ORDER_BEFORE


def test_declarations_are_inherited() -> None:
    class A(Service):
        pass

    class B(Service):
        ORDER_AFTER = frozenset({A})

    class SubB(B):
        pass

    assert frozenset({A}) == SubB.ORDER_AFTER
    assert names(summon_order(SubB)) == ["A", "SubB"]


@pytest.mark.parametrize("attribute", ["ORDER_AFTER", "ORDER_BEFORE"])
@pytest.mark.parametrize(
    "value",
    [{int}, {object}, {"A"}, [Service, object()], {Service(None)}],
    ids=["int", "object", "name", "instance-object", "service-instance"],
)
def test_members_must_be_service_subclasses(attribute: str, value: Any) -> None:
    with pytest.raises(TypeError, match="is not a Service subclass"):
        type("Broken", (Service,), {attribute: value})


@pytest.mark.parametrize("attribute", ["ORDER_AFTER", "ORDER_BEFORE"])
@pytest.mark.parametrize("value", [5, None, "Service", Service])
def test_declarations_must_be_collections(attribute: str, value: Any) -> None:
    with pytest.raises(TypeError, match="must be a collection of Service subclasses"):
        type("Broken", (Service,), {attribute: value})


def test_a_malformed_declaration_assigned_later_is_caught_when_ordering() -> None:
    class A(Service):
        pass

    A.ORDER_AFTER = {int}  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="is not a Service subclass"):
        summon_order(A)


def test_a_declaration_assigned_later_is_used() -> None:
    class A(Service):
        pass

    class B(Service):
        pass

    B.ORDER_AFTER = {A}
    assert names(summon_order(B)) == ["A", "B"]


def test_summon_order_wants_a_service_class() -> None:
    with pytest.raises(TypeError, match="not a Service subclass"):
        summon_order(int)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a Service subclass"):
        summon_order(Service(None))  # type: ignore[arg-type]


# -- summon order ---------------------------------------------------------------------------


def test_a_service_without_dependencies_is_alone() -> None:
    class A(Service):
        pass

    assert summon_order(A) == [A]


def test_chain() -> None:
    class A(Service):
        pass

    class B(Service):
        ORDER_AFTER = frozenset({A})

    class C(Service):
        ORDER_AFTER = frozenset({B})

    assert summon_order(C) == [A, B, C]
    assert summon_order(B) == [A, B]


def test_diamond_puts_the_shared_dependency_first_and_once() -> None:
    class Base(Service):
        pass

    class Right(Service):
        ORDER_AFTER = frozenset({Base})

    class Left(Service):
        ORDER_AFTER = frozenset({Base})

    class Top(Service):
        ORDER_AFTER = frozenset({Left, Right})

    assert summon_order(Top) == [Base, Left, Right, Top]


def test_independent_dependencies_are_ordered_by_name() -> None:
    class Zeta(Service):
        pass

    class Alpha(Service):
        pass

    class Mu(Service):
        pass

    class Top(Service):
        ORDER_AFTER = frozenset({Zeta, Mu, Alpha})

    assert names(summon_order(Top)) == ["Alpha", "Mu", "Zeta", "Top"]
    assert summon_order(Top) == summon_order(Top)


def test_dependencies_come_before_names_that_sort_earlier() -> None:
    class Zulu(Service):
        pass

    class Alpha(Service):
        ORDER_AFTER = frozenset({Zulu})

    class Top(Service):
        ORDER_AFTER = frozenset({Alpha})

    assert names(summon_order(Top)) == ["Zulu", "Alpha", "Top"]


def test_order_before_overrides_the_name_order() -> None:
    class Alpha(Service):
        pass

    class Beta(Service):
        ORDER_BEFORE = frozenset({Alpha})

    class Gamma(Service):  # like Beta, without the constraint
        pass

    class Top(Service):
        ORDER_AFTER = frozenset({Alpha, Beta})

    class Control(Service):
        ORDER_AFTER = frozenset({Alpha, Gamma})

    assert names(summon_order(Top)) == ["Beta", "Alpha", "Top"]
    assert names(summon_order(Control)) == ["Alpha", "Gamma", "Control"]


def test_order_before_does_not_summon() -> None:
    class Later(Service):
        pass

    class Alpha(Service):
        ORDER_BEFORE = frozenset({Later})

    assert summon_order(Alpha) == [Alpha]


def test_order_before_is_transitive_through_classes_not_summoned() -> None:
    class Alpha(Service):
        pass

    class Middle(Service):  # never summoned, yet it orders Beta before Alpha
        ORDER_BEFORE = frozenset({Alpha})

    class Beta(Service):
        ORDER_BEFORE = frozenset({Middle})

    class Top(Service):
        ORDER_AFTER = frozenset({Alpha, Beta})

    assert summon_order(Top) == [Beta, Alpha, Top]


def test_order_before_on_a_dependency_of_a_dependent() -> None:
    # Early must precede Shared, so Early's whole chain is placed before it
    class Shared(Service):
        pass

    class Early(Service):
        ORDER_BEFORE = frozenset({Shared})

    class Zed(Service):
        ORDER_AFTER = frozenset({Early})

    class Top(Service):
        ORDER_AFTER = frozenset({Shared, Zed})

    assert summon_order(Top) == [Early, Shared, Zed, Top]


def test_present_classes_are_skipped() -> None:
    class A(Service):
        pass

    class B(Service):
        ORDER_AFTER = frozenset({A})

    class C(Service):
        ORDER_AFTER = frozenset({B})

    assert summon_order(C, present={A}) == [B, C]
    assert summon_order(C, present=[A, B]) == [C]
    assert summon_order(C, present=(C,)) == []


def test_dependencies_reached_only_through_present_classes_are_skipped() -> None:
    class A(Service):
        pass

    class B(Service):
        ORDER_AFTER = frozenset({A})

    class C(Service):
        ORDER_AFTER = frozenset({B})

    assert summon_order(C, present={B}) == [C]


def test_present_does_not_hide_other_paths() -> None:
    class A(Service):
        pass

    class B(Service):
        ORDER_AFTER = frozenset({A})

    class C(Service):
        ORDER_AFTER = frozenset({A, B})

    assert summon_order(C, present={B}) == [A, C]


def test_a_constraint_before_a_present_class_is_ignored() -> None:
    class Old(Service):
        pass

    class New(Service):
        ORDER_BEFORE = frozenset({Old})

    assert summon_order(New, present={Old}) == [New]


# -- cycles ---------------------------------------------------------------------------------


def test_self_dependency_is_a_cycle() -> None:
    class A(Service):
        pass

    A.ORDER_AFTER = frozenset({A})
    with pytest.raises(ValueError, match="cycle") as error:
        summon_order(A)
    assert cycle_in(error) == ["A", "A"]


def test_two_class_cycle_through_order_after() -> None:
    class A(Service):
        pass

    class B(Service):
        ORDER_AFTER = frozenset({A})

    A.ORDER_AFTER = frozenset({B})
    for start in (A, B):
        with pytest.raises(ValueError) as error:
            summon_order(start)
        assert_cycle(error, ["A", "B"])


def test_three_class_cycle_through_order_after_names_only_its_members() -> None:
    class Pa(Service):
        pass

    class Qa(Service):
        ORDER_AFTER = frozenset({Pa})

    class Ra(Service):
        ORDER_AFTER = frozenset({Qa})

    class Aardvark(Service):  # depends on the cycle and sorts first, but is not in it
        ORDER_AFTER = frozenset({Ra})

    Pa.ORDER_AFTER = frozenset({Ra})
    with pytest.raises(ValueError) as error:
        summon_order(Aardvark)
    assert_cycle(error, ["Pa", "Qa", "Ra"])
    assert "Aardvark" not in str(error.value)


def test_cycle_mixing_order_after_and_order_before() -> None:
    class B(Service):
        pass

    class A(Service):
        ORDER_AFTER = frozenset({B})

    class C(Service):  # after A, but before B, which A comes after
        ORDER_AFTER = frozenset({A})
        ORDER_BEFORE = frozenset({B})

    with pytest.raises(ValueError) as error:
        summon_order(C)
    assert_cycle(error, ["B", "A", "C"])


def test_cycle_through_a_class_not_summoned() -> None:
    class B(Service):
        pass

    class X(Service):  # only an ordering constraint: X before B
        ORDER_BEFORE = frozenset({B})

    class A(Service):  # B before A, and A before X: a cycle through X
        ORDER_AFTER = frozenset({B})
        ORDER_BEFORE = frozenset({X})

    with pytest.raises(ValueError) as error:
        summon_order(A)
    assert_cycle(error, ["A", "X", "B"])


def test_order_before_contradicting_a_dependency_is_a_cycle() -> None:
    class Dependency(Service):
        pass

    class User(Service):
        ORDER_AFTER = frozenset({Dependency})

    User.ORDER_BEFORE = frozenset({Dependency})
    with pytest.raises(ValueError) as error:
        summon_order(User)
    assert_cycle(error, ["Dependency", "User"])


def test_cycle_message_uses_qualified_names() -> None:
    class A(Service):
        pass

    A.ORDER_AFTER = frozenset({A})
    with pytest.raises(ValueError) as error:
        summon_order(A)
    qualified = f"{A.__module__}.{A.__qualname__}"
    assert str(error.value) == f"services ordered in a cycle: {qualified} before {qualified}"


# -- Service instances ----------------------------------------------------------------------


def test_service_keeps_its_client_and_has_a_named_logger() -> None:
    client = object()

    class Named(Service):
        pass

    service = Named(client)
    assert service.client is client
    assert isinstance(service.log, Logger)
    assert service.log.namespace == f"{__name__}.{Named.__qualname__}"
    assert service.log.source is service
    assert dict(service.dependencies) == {}


def test_service_uses_a_given_logger() -> None:
    logger = Logger(namespace="custom")
    assert Service(None, logger=logger).log is logger


def test_dependencies_are_read_only_and_typed() -> None:
    class Dep(Service):
        marker = "dep"

    class Other(Service):
        pass

    dep = Dep(None)
    given: dict[type[Service], Service] = {Dep: dep}
    service = Service(None, dependencies=given)
    given.clear()  # the service keeps its own copy
    assert service.dependencies[Dep] is dep
    assert service.dependency(Dep).marker == "dep"
    with pytest.raises(TypeError):
        service.dependencies[Other] = Other(None)  # type: ignore[index]
    with pytest.raises(KeyError, match="no dependency"):
        service.dependency(Other)


def test_default_shutdown_fires_at_once() -> None:
    results: list[object] = []
    Service(None).shutdown().addCallback(results.append)
    assert results == [None]


# -- the registry ---------------------------------------------------------------------------


class Recorder:
    """A stand-in client: services note what happens to them here."""

    def __init__(self) -> None:
        self.events: list[str] = []


class Recording(Service):
    """A service that notes its construction and shutdown on the client."""

    def __init__(self, client: Recorder, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.recorder = client
        client.events.append(f"init {type(self).__name__}")

    def shutdown(self) -> defer.Deferred[None]:
        self.recorder.events.append(f"shutdown {type(self).__name__}")
        return super().shutdown()


def test_summon_returns_one_instance_per_class() -> None:
    class A(Recording):
        pass

    client = Recorder()
    registry = ServiceRegistry(client)
    assert A not in registry
    assert registry.get(A) is None
    first = registry.summon(A)
    assert isinstance(first, A)
    assert first.client is client
    assert registry.summon(A) is first
    assert client.events == ["init A"]
    assert A in registry
    assert registry.get(A) is first
    assert registry[A] is first
    assert len(registry) == 1


def test_getitem_of_an_absent_class_raises() -> None:
    class A(Service):
        pass

    with pytest.raises(KeyError, match="not been summoned"):
        ServiceRegistry(None)[A]


def test_summon_creates_dependencies_first_and_injects_them() -> None:
    class Base(Recording):
        pass

    class Left(Recording):
        ORDER_AFTER = frozenset({Base})

    class Right(Recording):
        ORDER_AFTER = frozenset({Base})

    class Top(Recording):
        ORDER_AFTER = frozenset({Left, Right})

    client = Recorder()
    registry = ServiceRegistry(client)
    top = registry.summon(Top)
    assert client.events == ["init Base", "init Left", "init Right", "init Top"]
    assert names([type(s) for s in registry.instances_in_order()]) == [
        "Base",
        "Left",
        "Right",
        "Top",
    ]
    base, left, right = registry[Base], registry[Left], registry[Right]
    assert dict(top.dependencies) == {Left: left, Right: right}
    assert dict(left.dependencies) == {Base: base}
    assert right.dependency(Base) is base
    assert dict(base.dependencies) == {}


def test_summon_reuses_services_already_present() -> None:
    class Base(Recording):
        pass

    class User(Recording):
        ORDER_AFTER = frozenset({Base})

    client = Recorder()
    registry = ServiceRegistry(client)
    base = registry.summon(Base)
    user = registry.summon(User)
    assert user.dependency(Base) is base
    assert client.events == ["init Base", "init User"]


def test_order_before_does_not_summon_through_the_registry() -> None:
    class Later(Recording):
        pass

    class Early(Recording):
        ORDER_BEFORE = frozenset({Later})

    registry = ServiceRegistry(Recorder())
    registry.summon(Early)
    assert Later not in registry
    assert registry.instances_in_order() == [registry[Early]]


def test_summon_of_a_cycle_raises_and_creates_nothing() -> None:
    class A(Service):
        pass

    class B(Service):
        ORDER_AFTER = frozenset({A})

    A.ORDER_AFTER = frozenset({B})
    registry = ServiceRegistry(None)
    with pytest.raises(ValueError, match="cycle"):
        registry.summon(B)
    assert len(registry) == 0


def test_a_constructor_may_summon_other_services() -> None:
    class Helper(Recording):
        pass

    class Eager(Recording):
        def __init__(self, client: Recorder, **kwargs: Any) -> None:
            super().__init__(client, **kwargs)
            self.helper = client_registry.summon(Helper)

    client = Recorder()
    client_registry = ServiceRegistry(client)
    eager = client_registry.summon(Eager)
    assert eager.helper is client_registry[Helper]
    assert client.events == ["init Eager", "init Helper"]


def test_a_constructor_summoning_its_own_class_is_refused() -> None:
    class Selfish(Service):
        def __init__(self, client: Any, **kwargs: Any) -> None:
            super().__init__(client, **kwargs)
            registry.summon(Selfish)

    registry = ServiceRegistry(None)
    with pytest.raises(RuntimeError, match="being constructed"):
        registry.summon(Selfish)
    assert Selfish not in registry


def test_a_constructor_summoning_a_dependent_is_refused() -> None:
    class Inner(Service):
        def __init__(self, client: Any, **kwargs: Any) -> None:
            super().__init__(client, **kwargs)
            registry.summon(Outer)

    class Outer(Service):
        ORDER_AFTER = frozenset({Inner})

    registry = ServiceRegistry(None)
    with pytest.raises(RuntimeError, match="being constructed"):
        registry.summon(Inner)
    assert len(registry) == 0


def test_a_failing_constructor_keeps_the_services_made_before_it() -> None:
    class Fine(Recording):
        pass

    class Broken(Service):
        ORDER_AFTER = frozenset({Fine})

        def __init__(self, client: Any, **kwargs: Any) -> None:
            raise ZeroDivisionError("broken service")

    registry = ServiceRegistry(Recorder())
    with pytest.raises(ZeroDivisionError):
        registry.summon(Broken)
    assert Fine in registry
    assert Broken not in registry


def test_summon_refuses_non_services() -> None:
    with pytest.raises(TypeError):
        ServiceRegistry(None).summon(dict)  # type: ignore[type-var]


# -- shutdown -------------------------------------------------------------------------------


def errors_logged(events: Sequence[LogEvent]) -> list[LogEvent]:
    """The logged events that carry a failure."""
    return [event for event in events if "log_failure" in event]


def test_shutdown_all_runs_in_reverse_order_past_failures() -> None:
    class First(Recording):
        pass

    class Second(Recording):
        ORDER_AFTER = frozenset({First})

        def shutdown(self) -> defer.Deferred[None]:
            super().shutdown()
            return defer.fail(ZeroDivisionError("second failed"))

    class Third(Recording):
        ORDER_AFTER = frozenset({Second})

        def shutdown(self) -> defer.Deferred[None]:
            super().shutdown()
            raise KeyError("third raised")

    class Fourth(Recording):
        ORDER_AFTER = frozenset({Third})

    client = Recorder()
    registry = ServiceRegistry(client)
    registry.summon(Fourth)
    client.events.clear()
    results: list[object] = []
    with capturedLogs() as events:
        registry.shutdown_all().addBoth(results.append)

    assert results == [None]
    assert client.events == [
        "shutdown Fourth",
        "shutdown Third",
        "shutdown Second",
        "shutdown First",
    ]
    logged = errors_logged(events)
    assert [type(event["log_failure"].value) for event in logged] == [
        KeyError,
        ZeroDivisionError,
    ]
    assert [event["service"].rsplit(".", 1)[-1] for event in logged] == ["Third", "Second"]
    assert all(event["log_level"] is LogLevel.error for event in logged)
    assert [formatEvent(event) for event in logged] == [
        f"shutting down service {__name__}.{Third.__qualname__} failed",
        f"shutting down service {__name__}.{Second.__qualname__} failed",
    ]


def test_shutdown_all_waits_for_each_service_in_turn() -> None:
    pending: dict[str, defer.Deferred[None]] = {}

    class Slow(Recording):
        def shutdown(self) -> defer.Deferred[None]:
            super().shutdown()
            pending[type(self).__name__] = d = defer.Deferred[None]()
            return d

    class A(Slow):
        pass

    class B(Slow):
        ORDER_AFTER = frozenset({A})

    client = Recorder()
    registry = ServiceRegistry(client)
    registry.summon(B)
    client.events.clear()
    results: list[object] = []
    registry.shutdown_all().addBoth(results.append)

    assert client.events == ["shutdown B"]  # A waits until B has finished
    assert results == []
    pending["B"].callback(None)
    assert client.events == ["shutdown B", "shutdown A"]
    assert results == []
    pending["A"].callback(None)
    assert results == [None]


def test_shutdown_all_empties_the_registry() -> None:
    class A(Recording):
        pass

    client = Recorder()
    registry = ServiceRegistry(client)
    first = registry.summon(A)
    registry.shutdown_all()
    assert A not in registry
    assert registry.instances_in_order() == []
    registry.shutdown_all()  # nothing left to shut down twice
    assert client.events == ["init A", "shutdown A"]
    assert registry.summon(A) is not first


def test_registry_logs_to_a_given_logger() -> None:
    class Failing(Service):
        def shutdown(self) -> defer.Deferred[None]:
            return defer.fail(ZeroDivisionError("failed"))

    seen: list[LogEvent] = []
    logger = Logger(namespace="my.client", observer=cast(ILogObserver, seen.append))
    registry = ServiceRegistry(None, logger=logger)
    registry.summon(Failing)
    registry.shutdown_all()
    (event,) = seen
    assert event["log_namespace"] == "my.client"
    assert isinstance(event["log_failure"].value, ZeroDivisionError)
