import { randomRuns } from './random-membership.ts'

randomRuns('test/sim/random-membership-b.test.ts', 2000, 100)
