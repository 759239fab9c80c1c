"""Check an ELF relocatable object before LLVM's loader sees it.

LLVM's object loader (RuntimeDyld) trusts the file: a truncated object, or
garbage with a valid checksum, crashes the process inside it. So an object
code from the disk cache is read here first, in Python, against what a
program's object must be: a 64-bit little-endian relocatable object for the
host's machine whose every section, symbol, string and relocation lies
inside the file and inside its section, whose relocation types the loader
knows, that defines exactly the expected global symbols (function or data,
of the expected sizes), and whose other symbols all resolve in this process.

Only the structure can be checked: instructions that are valid ELF but wrong
code would still run. That is what the cache's owner and permission checks
are for (cache.py).
"""
from __future__ import annotations

import ctypes
import functools
import platform
import struct
from dataclasses import dataclass

_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_SECTION = struct.Struct("<IIQQQQIIQQ")  # name, type, flags, addr, offset, size, link, info, addralign, entsize
_SYMBOL = struct.Struct("<IBBHQQ")  # name, info, other, shndx, value, size
_RELA = struct.Struct("<QQq")  # offset, info, addend
_IDENT = b"\x7fELF\x02\x01\x01"  # magic, 64-bit, little-endian, version 1
ET_REL = 1
SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 2, 3, 4, 8, 9
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
SHN_UNDEF, SHN_LORESERVE, SHN_ABS, SHN_COMMON = 0, 0xFF00, 0xFFF1, 0xFFF2
STB_LOCAL, STT_OBJECT, STT_FUNC = 0, 1, 2
_MACHINES = {"x86_64": 62, "AMD64": 62, "aarch64": 183, "arm64": 183}
# x86-64 relocation type -> bytes it patches: the types RuntimeDyldELF applies.
_X86_64_RELOCATIONS = {0: 0, 1: 8, 2: 4, 3: 4, 4: 4, 9: 4, 10: 4, 11: 4, 24: 8, 25: 8, 26: 4, 41: 4, 42: 4}
_MAX_ALIGN = 4096
_MAX_NOBITS = 1 << 24  # zero-filled data (the BLAS slots, profile counters) far below this


@dataclass(frozen=True)
class Symbol:
    """A global symbol the object must define: a function, or data of `size` bytes."""

    name: str
    function: bool
    size: int | None = None


class InvalidObject(ValueError):
    """The bytes are not an object file this program's code could be."""


def check_object(data: bytes, expected: tuple[Symbol, ...]) -> None:
    """Raise InvalidObject unless `data` is a well-formed host relocatable object defining
    exactly the `expected` global symbols, every other symbol resolving in this process."""
    sections = _sections(data)
    symbols = _symbols(data, sections)
    for index, section in enumerate(sections):
        if section.type == SHT_RELA:
            _check_relocations(data, sections, index, len(symbols))
        elif section.type == SHT_REL:
            raise InvalidObject("REL relocations (the host's objects use RELA)")
    defined = {}
    for name, info, shndx, value, size in symbols:
        if info >> 4 == STB_LOCAL or not name:
            continue
        if shndx == SHN_UNDEF:
            if not _resolves(name):
                raise InvalidObject(f"undefined symbol {name!r} does not resolve in this process")
        elif name in defined:
            raise InvalidObject(f"symbol {name!r} defined twice")
        else:
            defined[name] = (info & 0xF, shndx, size)
    if set(defined) != {s.name for s in expected}:
        raise InvalidObject(f"defines {sorted(defined)}, expected {sorted(s.name for s in expected)}")
    for symbol in expected:
        kind, shndx, size = defined[symbol.name]
        flags = sections[shndx].flags if shndx < len(sections) else 0
        if symbol.function and (kind != STT_FUNC or not flags & SHF_EXECINSTR):
            raise InvalidObject(f"{symbol.name!r} is not a function in executable code")
        if not symbol.function and (kind != STT_OBJECT or not flags & SHF_WRITE or size != symbol.size):
            raise InvalidObject(f"{symbol.name!r} is not {symbol.size} bytes of writable data")


@dataclass(frozen=True)
class _Section:
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int


def _sections(data: bytes) -> list[_Section]:
    if len(data) < _HEADER.size:
        raise InvalidObject(f"{len(data)} bytes: shorter than an ELF header")
    (ident, e_type, machine, _, _, _, shoff, _, ehsize, _, _, shentsize, shnum, shstrndx) = _HEADER.unpack_from(data)
    if ident[:7] != _IDENT or e_type != ET_REL or ehsize != _HEADER.size or shentsize != _SECTION.size:
        raise InvalidObject("not a 64-bit little-endian ELF relocatable object")
    if machine != _MACHINES.get(platform.machine(), machine):
        raise InvalidObject(f"ELF machine {machine}, not this host's ({platform.machine()})")
    if shnum == 0 or shnum >= SHN_LORESERVE or shstrndx >= shnum or shoff + shnum * shentsize > len(data):
        raise InvalidObject("section headers outside the file")
    sections = [_Section(*(_SECTION.unpack_from(data, shoff + k * shentsize)[i] for i in (1, 2, 4, 5, 6, 7, 9)))
                for k in range(shnum)]
    for k, s in enumerate(sections):
        addralign = _SECTION.unpack_from(data, shoff + k * shentsize)[8]
        if addralign > _MAX_ALIGN or addralign & (addralign - 1):
            raise InvalidObject(f"section {k}: alignment {addralign}")
        if s.type == SHT_NOBITS:
            if s.size > _MAX_NOBITS:
                raise InvalidObject(f"section {k}: {s.size} zero-filled bytes")
        elif s.offset + s.size > len(data):
            raise InvalidObject(f"section {k} ends past the file")
        if s.link >= shnum:
            raise InvalidObject(f"section {k} links to section {s.link} of {shnum}")
    if sections[shstrndx].type != SHT_STRTAB:
        raise InvalidObject("the section names are not a string table")
    return sections


def _string(data: bytes, table: _Section, offset: int) -> str:
    if table.type != SHT_STRTAB or offset >= table.size:
        raise InvalidObject("a name outside its string table")
    end = data.find(b"\0", table.offset + offset, table.offset + table.size)
    if end < 0:
        raise InvalidObject("an unterminated name")
    return data[table.offset + offset:end].decode("ascii", "replace")


def _symbols(data: bytes, sections: list[_Section]) -> list[tuple[str, int, int, int, int]]:
    """(name, info, section index, value, size) of each symbol of the one symbol table."""
    tables = [s for s in sections if s.type == SHT_SYMTAB]
    if len(tables) != 1 or tables[0].entsize != _SYMBOL.size or tables[0].size % _SYMBOL.size:
        raise InvalidObject("not exactly one well-formed symbol table")
    table, strings = tables[0], sections[tables[0].link]
    symbols = []
    for k in range(table.size // _SYMBOL.size):
        name, info, _, shndx, value, size = _SYMBOL.unpack_from(data, table.offset + k * _SYMBOL.size)
        if shndx not in (SHN_UNDEF, SHN_ABS, SHN_COMMON):
            if shndx >= len(sections):
                raise InvalidObject(f"symbol {k} in section {shndx} of {len(sections)}")
            if value + size > sections[shndx].size:
                raise InvalidObject(f"symbol {k} ends past its section")
        symbols.append((_string(data, strings, name) if name else "", info, shndx, value, size))
    return symbols


def _check_relocations(data: bytes, sections: list[_Section], index: int, symbols: int) -> None:
    rela = sections[index]
    if rela.entsize != _RELA.size or rela.size % _RELA.size or sections[rela.link].type != SHT_SYMTAB:
        raise InvalidObject(f"section {index}: malformed relocations")
    if not 0 < rela.info < len(sections):
        raise InvalidObject(f"section {index} relocates section {rela.info} of {len(sections)}")
    target = sections[rela.info]
    check_types = platform.machine() in ("x86_64", "AMD64")
    for k in range(rela.size // _RELA.size):
        offset, info, _ = _RELA.unpack_from(data, rela.offset + k * _RELA.size)
        symbol, kind = info >> 32, info & 0xFFFFFFFF
        if check_types and kind not in _X86_64_RELOCATIONS:
            raise InvalidObject(f"section {index}: relocation type {kind}")
        width = _X86_64_RELOCATIONS[kind] if check_types else 0
        if symbol >= symbols or offset + width > target.size:
            raise InvalidObject(f"section {index}: relocation {k} outside its section or symbol table")


@functools.cache
def _process() -> ctypes.CDLL:
    return ctypes.CDLL(None)


def _resolves(name: str) -> bool:
    """Whether `name` is a symbol of this process (what LLVM's loader links an external to)."""
    try:
        getattr(_process(), name)
    except (AttributeError, ValueError):
        return False
    return True
