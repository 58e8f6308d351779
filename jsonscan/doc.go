// Package jsonscan is the one JSON scanner of the gateway. It offers three things:
//
//   - primitives (ScanString, ScanNumber, SkipSpace, Unescape, AppendFold) that the
//     masking walker and the rules' body checker build their own walks on;
//   - Scanner, a strict, iterative tokenizer that reports duplicate keys, excess depth,
//     trailing data, non-finite numbers (NaN, Infinity) and trailing commas as distinct
//     errors (for JSON-RPC and body conditions: what is judged must be what any parser
//     reads, so anything two parsers could read differently is refused);
//   - Strings, a lenient pass that decodes every string-like span of a body whether or
//     not the body parses (for guards: what some lenient backend parser may read), and
//     Detect/ToUTF8 for bodies in UTF-8 with a BOM, UTF-16 or UTF-32.
//
// It imports nothing of the gateway's.
package jsonscan
