/** A FIFO with cheap shift and unshift. */
export class Deque<T> {
  #items: T[] = []
  #head = 0
  get length (): number { return this.#items.length - this.#head }
  push (v: T): void { this.#items.push(v) }
  peek (): T | undefined { return this.#items[this.#head] }
  shift (): T | undefined {
    if (this.#head >= this.#items.length) return undefined
    const v = this.#items[this.#head] as T
    this.#items[this.#head++] = undefined as T
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head)
      this.#head = 0
    }
    return v
  }

  unshift (v: T): void {
    if (this.#head > 0) this.#items[--this.#head] = v
    else this.#items.unshift(v)
  }
}
