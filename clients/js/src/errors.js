// The package's exceptions. Every bad payload raises a DecodeError naming what was wrong (the
// same reasons as the Python decoder's DecodeError); nothing from msgpack, zstd or zlib escapes.

/** A payload is corrupt, truncated, of an unknown version or needs a catalogue we lack. */
export class DecodeError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "DecodeError";
  }
}

/** A batch refers to a catalogue (epoch or point ids) that the decoder does not have. */
export class CatalogueMismatch extends DecodeError {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "CatalogueMismatch";
  }
}

/** A command could not be encoded (bad id, cmd or args, a value JSON/msgpack cannot carry). */
export class EncodeError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "EncodeError";
  }
}
