"""The license calls' look-ups and counters in SQL built once per process.

Apps call validate thousands of times a second, and for these small indexed queries Django's ORM
spends longer compiling the SQL than the database spends running it (bench/README.md has the
profile). So these statements are built once from the models' own tables and columns, and their
rows become model instances through the same converters the ORM applies: the objects are the ones
a select_related query would give. licensing.services decides what the rows mean.
"""

from __future__ import annotations

import functools
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.db.models import Field, Model
from django.db.models.base import ModelState
from django.db.models.expressions import Col, DatabaseDefault
from django.db.models.signals import post_init, post_save, pre_init, pre_save
from psycopg.types.datetime import TimestamptzLoader

from licensing.models import Activation, Customer, License, Plan, Product

# Table aliases, in the order their columns come in a row. The activation comes first and only
# when the call names a device.
_RELATED = (("l", License), ("p", Product), ("pl", Plan), ("c", Customer))
_ACTIVATION = ("a", Activation)

_converters_by_connection: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _column(alias: str, model: type[Model], attname: str) -> str:
    return f"{alias}.{connection.ops.quote_name(model._meta.get_field(attname).column)}"


def _live_devices_of(license_id: str) -> str:
    return (
        f"SELECT COUNT(*) AS total FROM {_table(Activation)} x "
        f"WHERE {_column('x', Activation, 'license_id')} = {license_id} "
        f"AND {_column('x', Activation, 'deactivated_at')} IS NULL"
    )


def _first_activation_of(license_id: str) -> str:
    return (
        f"SELECT MIN({_column('f', Activation, 'created_at')}) FROM {_table(Activation)} f "
        f"WHERE {_column('f', Activation, 'license_id')} = {license_id}"
    )


@functools.cache
def _select(
    *,
    by_fingerprint: bool = False,
    by_id: bool = False,
    locked: bool = False,
    skip_locked: bool = False,
    first_activation: bool = False,
    digests: int = 1,
    by_license_id: bool = False,
) -> str:
    parts = ((_ACTIVATION,) if by_fingerprint or by_id else ()) + _RELATED
    columns = ", ".join(
        f"{alias}.{connection.ops.quote_name(field.column)}"
        for alias, model in parts
        for field in model._meta.concrete_fields
    )
    joins = [
        f"INNER JOIN {_table(Product)} p ON {_column('p', Product, 'id')} = {_column('l', License, 'product_id')}",
        f"LEFT OUTER JOIN {_table(Plan)} pl ON {_column('pl', Plan, 'id')} = {_column('l', License, 'plan_id')}",
        f"LEFT OUTER JOIN {_table(Customer)} c "
        f"ON {_column('c', Customer, 'id')} = {_column('l', License, 'customer_id')}",
    ]
    if by_fingerprint or by_id:
        device = [
            f"{_column('a', Activation, 'license_id')} = {_column('l', License, 'id')}",
            f"{_column('a', Activation, 'deactivated_at')} IS NULL",
        ]
        if by_fingerprint:
            device.append(f"{_column('a', Activation, 'fingerprint')} = %s")
        if by_id:
            device.append(f"{_column('a', Activation, 'id')} = %s")
        joins.append(f"LEFT OUTER JOIN {_table(Activation)} a ON {' AND '.join(device)}")
    statement = f"SELECT {columns}"
    if not locked:
        # A locked read counts nothing: a count taken in the statement that waited for the lock
        # would miss what the lock's previous holder wrote. The caller counts after it.
        statement += f", ({_live_devices_of(_column('l', License, 'id'))})"
        if first_activation:
            statement += f", ({_first_activation_of(_column('l', License, 'id'))})"
    # More than one digest only while LICENSE_KEY_SECRET is rotated: the key under each secret, in one
    # statement, so a row stored again under the new secret meanwhile is still found.
    if by_license_id:
        where = f"{_column('l', License, 'id')} = %s"
    else:
        matches = "= %s" if digests == 1 else f"IN ({', '.join(['%s'] * digests)})"
        where = f"{_column('l', License, 'key_digest')} {matches}"
    statement += f" FROM {_table(License)} l {' '.join(joins)} WHERE {where}"
    if locked and connection.features.has_select_for_update:
        # NO KEY UPDATE: activations referencing the license can still be inserted by other
        # transactions' foreign-key checks; OF keeps the lock off the joined (nullable) rows.
        statement += " " + connection.ops.for_update_sql(of=("l",), no_key=True, skip_locked=skip_locked)
    return statement


@contextmanager
def _reading_cursor(db: BaseDatabaseWrapper) -> Iterator[CursorWrapper]:
    """A cursor for reading rows, which loads their timestamps with psycopg's compiled loader.

    Django loads them with a Python subclass of it that sets the connection's time zone, the
    costliest part of reading a license row. On a UTC connection, as Django opens them with
    USE_TZ, the compiled loader gives the same aware datetimes in UTC.
    """
    with db.cursor() as cursor:
        if db.vendor == "postgresql" and db.timezone is UTC:
            cursor.cursor.adapters.register_loader("timestamptz", TimestamptzLoader)
        yield cursor


def _converters(db: BaseDatabaseWrapper, model: type[Model]) -> list[tuple[Col, list[Callable]]]:
    """Per column, the functions the ORM would pass the database's value through on this connection."""
    cached = _converters_by_connection.setdefault(db, {})
    if model not in cached:
        columns = [field.get_col(model._meta.db_table) for field in model._meta.concrete_fields]
        cached[model] = [(col, db.ops.get_db_converters(col) + col.get_db_converters(db)) for col in columns]
    return cached[model]


def _instance(db: BaseDatabaseWrapper, model: type[Model], values: list[Any]) -> Model:
    for index, (col, converters) in enumerate(_converters(db, model)):
        for converter in converters:
            values[index] = converter(values[index], col, db)
    attnames = _plain_attnames(model)
    if attnames is None:
        return model.from_db(db.alias, None, values)
    # What from_db gives, without Model.__init__'s loop over the fields and its init signals,
    # which cost more than converting the row.
    instance = Model.__new__(model)
    instance.__dict__.update(zip(attnames, values, strict=True))
    instance._state = ModelState()
    instance._state.adding = False
    instance._state.db = db.alias
    return instance


@functools.cache
def _plain_attnames(model: type[Model]) -> tuple[str, ...] | None:
    """The columns' attribute names when building `model` needs nothing from_db and __init__ would
    add: neither is overridden and no init signal has a receiver; otherwise None."""
    plain = (
        model.__init__ is Model.__init__
        and model.from_db.__func__ is Model.from_db.__func__
        and not pre_init.has_listeners(model)
        and not post_init.has_listeners(model)
    )
    return tuple(field.attname for field in model._meta.concrete_fields) if plain else None


def _no_row(model: type[Model], values: list[Any]) -> bool:
    """Whether an outer join found no row of `model`: its columns, primary key included, are NULL."""
    return values[model._meta.concrete_fields.index(model._meta.pk)] is None


def _license_from(db: BaseDatabaseWrapper, values: list[Any]) -> License:
    """The license, with its product, plan and customer, from a row of `_select` past any device."""
    objects = {}
    for _alias, model in _RELATED:
        width = len(model._meta.concrete_fields)
        model_values, values = values[:width], values[width:]
        objects[model] = None if _no_row(model, model_values) else _instance(db, model, model_values)
    license = objects[License]
    if values:
        license.live_total = values[0]
    if len(values) > 1:
        license.first_activated_at = _activation_created_at(db, values[1])
    for field_name, model in (("product", Product), ("plan", Plan), ("customer", Customer)):
        License._meta.get_field(field_name).set_cached_value(license, objects[model])
    return license


def license_with_device(
    *,
    key_digests: list[str],
    fingerprint: str | None = None,
    activation_id: Any | None = None,
    with_first_activation: bool = False,
) -> tuple[License | None, Activation | None]:
    """The license with one of these key digests, with its product, plan, customer and live-device count
    (`live_total`), and the live activation named by fingerprint and/or id, if there is one.
    `with_first_activation` also reads when its first device was activated (`first_activated_at`)."""
    db = connections[DEFAULT_DB_ALIAS]
    by_fingerprint, by_id = bool(fingerprint), activation_id is not None
    params: list[Any] = []
    if by_fingerprint:
        params.append(fingerprint)
    if by_id:
        params.append(Activation._meta.pk.get_db_prep_value(activation_id, db))
    params.extend(key_digests)
    with _reading_cursor(db) as cursor:
        cursor.execute(
            _select(
                by_fingerprint=by_fingerprint,
                by_id=by_id,
                first_activation=with_first_activation,
                digests=len(key_digests),
            ),
            params,
        )
        row = cursor.fetchone()
    if row is None:
        return None, None
    values = list(row)
    activation = None
    if by_fingerprint or by_id:
        width = len(Activation._meta.concrete_fields)
        activation_values, values = values[:width], values[width:]
        if not _no_row(Activation, activation_values):
            activation = _instance(db, Activation, activation_values)
    license = _license_from(db, values)
    if activation is not None:
        Activation._meta.get_field("license").set_cached_value(activation, license)
    return license, activation


def locked_license(*, key_digests: list[str] | None = None, license_id: Any = None) -> License | None:
    """The license with one of these key digests, or this id, with its product, plan and customer, its
    row locked until the transaction ends (on databases that lock rows; SQLite locks the whole
    database on write).

    PostgreSQL gives a row it waited to lock as the row is now, but the rows the statement joined to
    it as they were when the statement began: a product withdrawn, a plan's limits changed or the
    license moved to another owner while it waited would go unseen. So the lock is first taken only
    if no one holds it; a license someone held is read again once the lock is ours, by a statement
    that sees everything committed before it. A change committed between the statement's start and
    its lock, with no one holding the row, can still leave the license naming another plan or owner
    than the one joined to it: then it is read again too.
    """
    if (key_digests is None) == (license_id is None):
        raise TypeError("Give the license's key digests or its id.")
    db = connections[DEFAULT_DB_ALIAS]
    if license_id is not None:
        params, shape = [License._meta.pk.get_db_prep_value(license_id, db)], {"by_license_id": True}
    else:
        params, shape = key_digests, {"digests": len(key_digests)}
    statement = _select(locked=True, **shape)
    with _reading_cursor(db) as cursor:
        if not db.features.has_select_for_update:
            # SQLite: no row locks (a write locks the whole database), so nothing to wait for.
            cursor.execute(statement, params)
            row = cursor.fetchone()
            return None if row is None else _license_from(db, list(row))
        cursor.execute(_select(locked=True, skip_locked=True, **shape), params)
        row = cursor.fetchone()
        if row is None:
            # Held by another transaction, or no such license: wait for the lock, then read again.
            cursor.execute(statement, params)
            if cursor.fetchone() is None:
                return None
        else:
            license = _license_from(db, list(row))
            if not _joined_rows_outdated(license):
                return license
        cursor.execute(statement, params)
        return _license_from(db, list(cursor.fetchone()))


def _joined_rows_outdated(license: License) -> bool:
    """Whether a license came with another product, plan or customer than its own columns name."""
    for name in ("product", "plan", "customer"):
        field = License._meta.get_field(name)
        joined = field.get_cached_value(license, default=None)
        if getattr(license, field.attname) != (joined.pk if joined is not None else None):
            return True
    return False


@functools.cache
def _select_live_devices() -> str:
    columns = ", ".join(f"a.{connection.ops.quote_name(field.column)}" for field in Activation._meta.concrete_fields)
    device = (
        f"{_column('a', Activation, 'license_id')} = %s AND {_column('a', Activation, 'deactivated_at')} IS NULL "
        f"AND {_column('a', Activation, 'fingerprint')} = %s"
    )
    return (
        f"SELECT {columns}, live.total FROM ({_live_devices_of('%s')}) live "
        f"LEFT OUTER JOIN {_table(Activation)} a ON {device}"
    )


def live_devices(license: License, *, fingerprint: str | None) -> tuple[int, Activation | None]:
    """How many live devices the license has, and its live one with this fingerprint, if any."""
    db = connections[DEFAULT_DB_ALIAS]
    license_id = License._meta.pk.get_db_prep_value(license.pk, db)
    with _reading_cursor(db) as cursor:
        cursor.execute(_select_live_devices(), [license_id, license_id, fingerprint])
        *values, total = cursor.fetchone()
    if _no_row(Activation, values):
        return total, None
    activation = _instance(db, Activation, values)
    Activation._meta.get_field("license").set_cached_value(activation, license)
    return total, activation


@functools.cache
def _select_first_activation() -> str:
    return f"SELECT ({_first_activation_of('%s')})"


def first_activated_at(license: License) -> datetime | None:
    """When the license's first device, live or not, was activated: as the query that loaded the
    license read it (`license_with_device(with_first_activation=True)`), else now."""
    if hasattr(license, "first_activated_at"):
        return license.first_activated_at
    db = connections[DEFAULT_DB_ALIAS]
    with _reading_cursor(db) as cursor:
        cursor.execute(_select_first_activation(), [License._meta.pk.get_db_prep_value(license.pk, db)])
        (value,) = cursor.fetchone()
    return _activation_created_at(db, value)


def _activation_created_at(db: BaseDatabaseWrapper, value: Any) -> datetime | None:
    created_at = Activation._meta.concrete_fields.index(Activation._meta.get_field("created_at"))
    col, converters = _converters(db, Activation)[created_at]
    for converter in converters:
        value = converter(value, col, db)
    return value


@functools.cache
def _select_by(model: type[Model], attname: str) -> str:
    columns = ", ".join(connection.ops.quote_name(field.column) for field in model._meta.concrete_fields)
    column = connection.ops.quote_name(model._meta.get_field(attname).column)
    return f"SELECT {columns} FROM {_table(model)} WHERE {column} = %s"


def held(model: type[Model], pk: Any) -> Model | None:
    """The row with this primary key, kept from changing or going until the transaction ends, or None.

    A shared lock (FOR SHARE): any number of transactions may hold it at once, as those storing
    rows that refer to it do, while a change or a delete of it waits for them all, and they for it.
    The foreign-key checks' own lock (KEY SHARE) does not wait for a change that keeps the key.
    SQLite locks the whole database on write instead.
    """
    db = connections[DEFAULT_DB_ALIAS]
    statement = _select_by(model, model._meta.pk.attname)
    if db.vendor == "postgresql":
        statement += " FOR SHARE"
    with _reading_cursor(db) as cursor:
        cursor.execute(statement, [model._meta.pk.get_db_prep_value(pk, db)])
        row = cursor.fetchone()
    return None if row is None else _instance(db, model, list(row))


def find_by(model: type[Model], attname: str, value: Any) -> Model | None:
    """The row whose unique column `attname` holds `value`, as a model instance, or None."""
    db = connections[DEFAULT_DB_ALIAS]
    with _reading_cursor(db) as cursor:
        cursor.execute(_select_by(model, attname), [model._meta.get_field(attname).get_db_prep_value(value, db)])
        row = cursor.fetchone()
    return None if row is None else _instance(db, model, list(row))


@functools.cache
def _usage_statements() -> tuple[str, str]:
    def column(attname: str) -> str:
        return connection.ops.quote_name(License._meta.get_field(attname).column)

    usage, limit, license_id = column("usage"), column("limit_usage"), column("id")
    # The limit is checked in the UPDATE itself, so concurrent uses can never overshoot it. No sum
    # is taken before the check: near the column's largest value, usage + increment overflows
    # (PostgreSQL refuses it, SQLite turns it into a float).
    return (
        f"UPDATE {_table(License)} SET {usage} = {usage} + %s "
        f"WHERE {license_id} = %s AND {usage} <= %s AND ({limit} IS NULL OR {limit} - {usage} >= %s)",
        f"SELECT {usage} FROM {_table(License)} WHERE {license_id} = %s",
    )


def count_usage(license: License, increment: int, *, most: int) -> int | None:
    """Count `increment` uses in one atomic UPDATE and return the license's usage after it; None when
    they would pass the license's usage limit, or `most` uses in all (and then nothing is counted)."""
    db = connections[DEFAULT_DB_ALIAS]
    license_id = License._meta.pk.get_db_prep_value(license.pk, db)
    # Read back in the UPDATE's transaction, which holds the row until it ends: read after it, a
    # parallel use counted in between would show in this call's answer.
    count, read = _usage_statements()
    with transaction.atomic(using=db.alias), db.cursor() as cursor:
        cursor.execute(count, [increment, license_id, most - increment, increment])
        if cursor.rowcount != 1:
            return None
        cursor.execute(read, [license_id])
        return cursor.fetchone()[0]


@functools.cache
def _tally_statements() -> tuple[str, str]:
    def column(model: type[Model], attname: str) -> str:
        return connection.ops.quote_name(model._meta.get_field(attname).column)

    count, validated_at = column(License, "validation_count"), column(License, "last_validated_at")
    seen_at = column(Activation, "last_seen_at")
    return (
        f"UPDATE {_table(License)} SET {count} = {count} + %s, {validated_at} = "
        f"CASE WHEN {validated_at} IS NULL OR {validated_at} < %s THEN %s ELSE {validated_at} END "
        f"WHERE {column(License, 'id')} = %s",
        f"UPDATE {_table(Activation)} SET {seen_at} = %s WHERE {column(Activation, 'id')} = %s AND {seen_at} < %s",
    )


def add_tallies(validations: dict[uuid.UUID, tuple[int, datetime]], devices_seen: dict[uuid.UUID, datetime]) -> None:
    """Add validation counts to licenses and move devices' last-seen times forward, in one transaction.

    Licenses are updated before devices, each in id order, as the activation and deactivation
    transactions lock a license before its devices, and several devices in id order: no two of
    them can wait for each other. A device may come without its license (seen on re-activation).
    """
    db = connections[DEFAULT_DB_ALIAS]
    datetime_field, pk = License._meta.get_field("last_validated_at"), License._meta.pk
    license_rows = []
    for license_id, (count, at) in sorted(validations.items()):
        at = datetime_field.get_db_prep_value(at, db)
        license_rows.append([count, at, at, pk.get_db_prep_value(license_id, db)])
    device_rows = []
    for activation_id, at in sorted(devices_seen.items()):
        at = datetime_field.get_db_prep_value(at, db)
        device_rows.append([at, Activation._meta.pk.get_db_prep_value(activation_id, db), at])
    count_licenses, see_devices = _tally_statements()
    with transaction.atomic(using=db.alias), db.cursor() as cursor:
        if license_rows:
            cursor.executemany(count_licenses, license_rows)
        if device_rows:
            cursor.executemany(see_devices, device_rows)


@functools.cache
def _insert_statement(model: type[Model]) -> tuple[str, tuple[Field, ...], tuple[Field, ...]]:
    """The INSERT of a new `model` row, the fields whose values it sends, and the fields the
    database fills in and returns (an auto-incremented id, a default only the database has)."""
    # A field with a database default is sent like any other (Django counts it among the fields the
    # database returns): left out, the database default would replace the value the row was given.
    fields = tuple(
        field for field in model._meta.concrete_fields if field is not model._meta.auto_field and not field.generated
    )
    returning = tuple(field for field in model._meta.db_returning_fields if field not in fields)
    statement = (
        f"INSERT INTO {_table(model)} ({', '.join(connection.ops.quote_name(field.column) for field in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    if returning:
        statement += " RETURNING " + ", ".join(connection.ops.quote_name(field.column) for field in returning)
    return statement, fields, returning


@functools.cache
def _has_database_defaults(model: type[Model]) -> bool:
    return any(field.has_db_default() for field in model._meta.concrete_fields)


def insert(instance: Model) -> None:
    """`instance.save(force_insert=True)` of a model without save signals, from a statement built once.

    An activation writes its device and its audit event this way: compiling two ORM inserts cost
    more than running them.
    """
    db = connections[DEFAULT_DB_ALIAS]
    model = type(instance)
    statement, fields, returning = _insert_statement(model)
    if (returning and not db.features.can_return_columns_from_insert) or _has_save_receivers(model):
        instance.save(force_insert=True, using=db.alias)
        return
    values = [field.pre_save(instance, True) for field in fields]
    if _has_database_defaults(model) and any(isinstance(value, DatabaseDefault) for value in values):
        # A field left to its database default: the statement built once sends every field.
        instance.save(force_insert=True, using=db.alias)
        return
    params = [field.get_db_prep_save(value, db) for field, value in zip(fields, values, strict=True)]
    with db.cursor() as cursor:
        cursor.execute(statement, params)
        row = cursor.fetchone() if returning else ()
    converters = dict(zip(model._meta.concrete_fields, _converters(db, model), strict=True))
    for field, value in zip(returning, row, strict=True):
        col, field_converters = converters[field]
        for converter in field_converters:
            value = converter(value, col, db)
        setattr(instance, field.attname, value)
    instance._state.adding = False
    instance._state.db = db.alias


def _has_save_receivers(model: type[Model]) -> bool:
    return pre_save.has_listeners(model) or post_save.has_listeners(model)
